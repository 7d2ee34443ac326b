import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';

/** Child processes of the bench, pinned to a core when the machine has two; all killed on exit. */
const children = new Set<ChildProcess>();
const killAll = () => {
  // children's own children too: nginx's workers outlive a killed master, and keep its port and a core busy
  for (const c of children) {
    for (const pid of withChildren(c.pid).reverse()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }
};
process.on('exit', killAll);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

export const HAS_TASKSET = os.cpus().length >= 2 && spawnSync('taskset', ['-c', '0', 'true']).status === 0;
/** Core 0: the process under test. Core 1: load tool, upstream, Redis, simulator. */
export const SUT_CORE = '0';
export const AUX_CORE = '1';

export function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

export function start(cmd: string, args: string[], opts: { core?: string; env?: NodeJS.ProcessEnv; quiet?: boolean; stdoutFile?: string } = {}): ChildProcess {
  const [file, argv] = HAS_TASKSET && opts.core ? ['taskset', ['-c', opts.core, cmd, ...args]] : [cmd, args];
  const child = spawn(file, argv, { env: { ...process.env, ...opts.env }, stdio: ['ignore', opts.stdoutFile ? openSync(opts.stdoutFile, 'w') : opts.quiet === false ? 'inherit' : 'ignore', 'inherit'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

export function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 3000).unref();
  });
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export async function waitForPort(port: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Resident set size of a process, bytes (Linux). */
export function rssOf(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** The pid of the real program when it was started through taskset (taskset execs, so it is the same). */
export const pidOf = (c: ChildProcess) => c.pid;

export function median(xs: number[]): number {
  const s = [...xs].filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** CPU time (user + system) a process has used so far, in µs (Linux, clock ticks of 10 ms). */
export function cpuMicros(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[11], fields[12]: utime, stime (the 14th and 15th of proc(5), counted after "pid (comm)")
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100;
  } catch {
    return 0;
  }
}

/** A process and its children (nginx's workers), for CPU accounting. */
export function withChildren(pid: number | undefined): number[] {
  if (!pid) return [];
  const out = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout ?? '';
  return [pid, ...out.split('\n').filter(Boolean).map(Number)];
}
