import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { waitFor } from './wait.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { once } from 'node:events';
import net from 'node:net';
import { freePort } from './ports.js';

export interface RedisServer {
  port: number;
  url: string;
  /** Stops the server (SIGTERM, then SIGKILL) and waits for it to exit. */
  stop(): Promise<void>;
  /** SIGKILL (a crash: nothing written beyond what the server had already written) and waits for it to exit. */
  kill(): Promise<void>;
  /** Starts it again on the same port. */
  start(): Promise<void>;
  /** SIGSTOP: connections stay open but nothing answers (a blackhole). */
  pause(): void;
  resume(): void;
  /** Stops the server for good and removes its working directory. */
  close(): Promise<void>;
}

/* No redis-server may outlive the test process, however it ends. */
const children = new Set<ChildProcess>();
function killAll(): void {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    killAll();
    // then die of the same signal, as the process would have without this handler (unless someone else handles it)
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Asks whatever listens on the port for its pid (`INFO server` → process_id), so a server of someone
 * else that took the port meanwhile is not mistaken for ours. Undefined while nothing (ready) answers.
 */
function serverPid(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    const done = (pid: number | undefined) => {
      s.destroy();
      resolve(pid);
    };
    s.setTimeout(500, () => done(undefined));
    s.on('connect', () => s.write('INFO server\r\n'));
    s.on('data', (d) => {
      buf += d.toString('latin1');
      if (buf.startsWith('-')) return done(undefined); // e.g. -LOADING
      const m = /^\$(\d+)\r\n/.exec(buf);
      if (!m) return;
      if (buf.length < m[0].length + Number(m[1])) return;
      const pid = /process_id:(\d+)/.exec(buf);
      done(pid ? Number(pid[1]) : undefined);
    });
    s.on('error', () => done(undefined));
    s.on('close', () => done(undefined));
  });
}

class PortTaken extends Error {}

/**
 * A real redis-server of this test file's own, on a free port, keeping nothing on disk
 * (`--save "" --appendonly no`). `extra` adds arguments (cluster mode) or a config file (sentinel).
 */
export async function startRedis(extra: (port: number, dir: string) => { conf?: string; args?: string[] } = () => ({})): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), 'wxgate-redis-'));
  let child: ChildProcess | undefined;
  let port = 0;

  async function spawnOn(p: number): Promise<void> {
    const args = ['--port', String(p), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning', '--dir', dir];
    const { conf, args: more = [] } = extra(p, dir);
    // found on PATH, like any other tool the tests use
    const c = spawn('redis-server', [...(conf ? [conf] : []), ...args, ...more], { stdio: 'ignore' });
    child = c;
    children.add(c);
    c.once('exit', () => children.delete(c));
    const spawned = new Promise<void>((resolve, reject) => {
      c.once('spawn', resolve);
      c.once('error', reject);
    });
    await spawned;
    const deadline = Date.now() + 10_000;
    for (;;) {
      const pid = await serverPid(p);
      if (pid === c.pid) return;
      if (c.exitCode !== null || c.signalCode !== null) throw new PortTaken(`redis-server on port ${p} exited with ${c.exitCode ?? c.signalCode}`);
      if (pid !== undefined) {
        // someone else's server answers on that port: ours cannot have bound it
        await stopChild(c);
        throw new PortTaken(`port ${p} is taken by another redis-server (pid ${pid})`);
      }
      if (Date.now() > deadline) {
        await stopChild(c);
        throw new Error(`redis-server on port ${p} did not answer within 10 s`);
      }
      await sleep(20); // the poll interval of the start-up loop above (its errors are its own)
    }
  }

  async function stopChild(c: ChildProcess): Promise<void> {
    if (c.exitCode !== null || c.signalCode !== null) return;
    const exited = once(c, 'exit');
    c.kill('SIGCONT'); // a paused server cannot act on SIGTERM
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  }

  // A port that was free a moment ago may be taken by the time redis-server binds it: try another.
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    try {
      await spawnOn(port);
      break;
    } catch (err) {
      if (!(err instanceof PortTaken) || attempt >= 5) {
        rmSync(dir, { recursive: true, force: true });
        throw err;
      }
    }
  }

  const stop = async () => {
    if (child) await stopChild(child);
  };
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop,
    kill: async () => {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const exited = once(c, 'exit');
      c.kill('SIGKILL');
      await exited;
    },
    start: async () => {
      if (child && child.exitCode === null && child.signalCode === null) return;
      await spawnOn(port);
    },
    pause: () => void child?.kill('SIGSTOP'),
    resume: () => void child?.kill('SIGCONT'),
    close: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const run = promisify(execFile);

/** A three-master Redis Cluster of real redis-server processes. */
export async function startRedisCluster(): Promise<{ nodes: RedisServer[]; urls: string[]; close(): Promise<void> }> {
  const nodes = await Promise.all(
    [0, 1, 2].map(() =>
      startRedis((port) => ({ args: ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '2000'] })),
    ),
  );
  await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes']);
  for (const n of nodes) {
    const ok = async () => (await run('redis-cli', ['-p', String(n.port), 'cluster', 'info'])).stdout.includes('cluster_state:ok');
    await waitFor(ok, { timeout: 15_000, interval: 100, message: 'the cluster came up' });
  }
  return { nodes, urls: nodes.map((n) => n.url), close: async () => void (await Promise.all(nodes.map((n) => n.close()))) };
}

/** A Redis master watched by one real Sentinel (master name "wxgate-master"). */
export async function startSentinel(): Promise<{ master: RedisServer; sentinel: RedisServer; address: string; close(): Promise<void> }> {
  const master = await startRedis();
  const sentinel = await startRedis((port, dir) => {
    const conf = join(dir, 'sentinel.conf');
    writeFileSync(conf, `port ${port}\nbind 127.0.0.1\nsentinel monitor wxgate-master 127.0.0.1 ${master.port} 1\nsentinel down-after-milliseconds wxgate-master 2000\n`);
    return { conf, args: ['--sentinel'] };
  });
  return {
    master,
    sentinel,
    address: `127.0.0.1:${sentinel.port}`,
    close: async () => {
      await sentinel.close();
      await master.close();
    },
  };
}
