import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
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
  /** Starts it again on the same port. */
  start(): Promise<void>;
  /** SIGSTOP: connections stay open but nothing answers (a blackhole). */
  pause(): void;
  resume(): void;
  close(): Promise<void>;
}

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    s.setTimeout(500, () => s.destroy());
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      buf += d;
      if (buf.includes('\r\n')) {
        s.destroy();
        resolve(buf.startsWith('+PONG'));
      }
    });
    s.on('error', () => resolve(false));
    s.on('close', () => resolve(false));
  });
}

/** A real redis-server of this test file's own, on a free port, keeping nothing on disk. */
export async function startRedis(extra: (port: number, dir: string) => { conf?: string; args?: string[] } = () => ({})): Promise<RedisServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'wxgate-redis-'));
  let child: ChildProcess | undefined;

  async function start(): Promise<void> {
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning', '--dir', dir];
    const { conf, args: more = [] } = extra(port, dir);
    child = spawn('redis-server', [...(conf ? [conf] : []), ...args, ...more], { stdio: 'ignore' });
    children.add(child);
    const c = child;
    c.once('exit', () => children.delete(c));
    const deadline = Date.now() + 10_000;
    while (!(await ping(port))) {
      if (c.exitCode !== null) throw new Error(`redis-server exited with ${c.exitCode} (port ${port} taken?)`);
      if (Date.now() > deadline) throw new Error('redis-server did not answer PING');
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  async function stop(): Promise<void> {
    const c = child;
    if (!c || c.exitCode !== null) return;
    const exited = once(c, 'exit');
    c.kill('SIGCONT');
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  }

  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop,
    start,
    pause: () => child?.kill('SIGSTOP'),
    resume: () => child?.kill('SIGCONT'),
    close: stop,
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
  const deadline = Date.now() + 15_000;
  for (const n of nodes) {
    for (;;) {
      const { stdout } = await run('redis-cli', ['-p', String(n.port), 'cluster', 'info']);
      if (stdout.includes('cluster_state:ok')) break;
      if (Date.now() > deadline) throw new Error('the cluster did not come up');
      await new Promise((r) => setTimeout(r, 100));
    }
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
