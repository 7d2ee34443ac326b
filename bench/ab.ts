/**
 * npm run bench:ab -- OTHER/dist/cli.js [MORE/dist/cli.js ...] — CPU per warm authenticated request of
 * this checkout's build and other builds, several processes of each.
 *
 * `npm run bench` with BENCH_BASELINE starts one process per build; a process's JIT and heap layout
 * make its cost differ by ±15% from another process of the same build on this machine, so one run can
 * rank two builds either way. Here each build runs AB_COPIES processes (default 3), interleaved, and
 * each is measured AB_ROUNDS times (default 3) for 4 s with wrk on core 1; CPU µs per request comes
 * from /proc (the process's own user + system time). The median over every measurement is the figure.
 *
 * AB_HEADERS='Name: value|Name: value' adds headers to every request (wrk sends only Host and the
 * Authorization given; an app's HTTP stack also sends Connection: keep-alive, User-Agent, Accept ...).
 * AB_PATH (default /api/items, authenticated) picks another path: /pub/items is the public route (the
 * token is still sent, and ignored there), so `AB_PATH=/pub/items npm run bench:ab -- dist/cli.js`
 * against a plain run shows what the session check costs.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { AUX_CORE, freePort, has, HAS_TASKSET, start, stop, SUT_CORE, waitForPort } from './lib/procs.js';
import { CLI, gatewayConfig, loginUsers, startAux } from './lib/setup.js';
if (!has('wrk') || !HAS_TASKSET) {
  console.error('[bench:ab] needs wrk and taskset on a machine with 2 cores or more (apt-get install -y wrk)');
  process.exit(1);
}
if (process.argv.length < 3) {
  console.error('usage: npm run bench:ab -- OTHER/dist/cli.js [MORE/dist/cli.js ...]');
  process.exit(1);
}
const aux = await startAux();
const clis = [CLI, ...process.argv.slice(2)];
const copies = Number(process.env.AB_COPIES ?? 3);
const procs: { name: string; port: number; pid: number; hdr: string; child: ChildProcess }[] = [];
for (let k = 0; k < copies; k++) for (const c of clis) {
  const port = await freePort();
  const child = start(process.execPath, [c, '--config', gatewayConfig(aux, port, 100_000)], { core: SUT_CORE });
  await waitForPort(port);
  procs.push({ name: c, port, pid: child.pid!, hdr: `Authorization: Bearer ${(await loginUsers(port, 1, `u${port}`))[0]}`, child });
}
/** user + system CPU of a process, in clock ticks (1/100 s) */
function cpu(pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}
const res = new Map<string, number[]>();
/** wrk on AUX_CORE (the load tool's), 64 connections, one thread */
const PATH = process.env.AB_PATH ?? '/api/items';
const extra = (process.env.AB_HEADERS ?? '').split('|').filter(Boolean).flatMap((h) => ['-H', h.trim()]);
const wrk = (p: (typeof procs)[0], d: string) =>
  execFileSync('taskset', ['-c', AUX_CORE, 'wrk', '-t1', '-c64', `-d${d}`, '-H', p.hdr, ...extra, `http://127.0.0.1:${p.port}${PATH}`]).toString();
for (const p of procs) wrk(p, '3s');
for (let r = 0; r < Number(process.env.AB_ROUNDS ?? 3); r++) for (const p of procs) {
  const a = cpu(p.pid);
  const n = Number(wrk(p, '4s').match(/(\d+) requests in/)![1]);
  res.set(p.name, [...(res.get(p.name) ?? []), ((cpu(p.pid) - a) * 1e4) / n]);
}
for (const [k, v] of res) {
  const sorted = [...v].sort((a, b) => a - b);
  console.log(`${k === CLI ? 'this checkout' : k}: median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(1)} µs/req (all: ${v.map((x) => x.toFixed(0)).join(' ')})`);
}
for (const p of procs) await stop(p.child);
process.exit(0);
