/**
 * npm run bench:profile -- [auth|public|nolru|login|http-proxy|bare] — where the gateway's CPU goes under load.
 *
 * Runs the gateway built from this checkout under `node --cpu-prof` on core 0, drives one scenario
 * for BENCH_SECONDS (default 10) with wrk/autocannon from core 1, stops it cleanly so V8 writes the
 * profile, and prints self time by function and by package. The .cpuprofile is kept (open it in
 * Chrome DevTools) in .bench/.
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join, sep } from 'node:path';
import { throughput } from './lib/load.js';
import { freePort, start, stop, SUT_CORE, waitForPort } from './lib/procs.js';
import { CLI, gatewayConfig, log, loginUsers, ROOT, startAux, tsx, url } from './lib/setup.js';

const scenario = process.argv[2] ?? 'auth';
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const outDir = join(ROOT, '.bench', `profile-${scenario}-${Date.now()}`);
mkdirSync(outDir, { recursive: true });

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

/** Which package (or our own file, or V8/Node itself) a frame belongs to. */
function owner(u: string): string {
  if (!u) return '(native / GC / idle)';
  const nm = u.lastIndexOf(`node_modules${sep}`);
  if (nm >= 0) {
    const rest = u.slice(nm + 13).split(sep);
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (u.startsWith('node:')) return `node:${u.slice(5).split('/')[0]}`;
  const i = u.indexOf(`${sep}dist${sep}`);
  return i >= 0 ? `wxgate ${u.slice(i + 6)}` : u;
}

async function main() {
  const aux = await startAux();
  const port = await freePort();
  const cfg = gatewayConfig(aux, port, scenario === 'nolru' ? 0 : 100_000);
  const prof = ['--cpu-prof', '--cpu-prof-dir', outDir];
  // "http-proxy" and "bare" profile the plain http-proxy peer and the bare node proxy on the same scenario as "auth", for comparison
  const peer = scenario === 'http-proxy' ? 'peers/http-proxy.ts' : scenario === 'bare' ? 'peers/bare-node-proxy.ts' : undefined;
  const gw =
    peer
      ? start(process.execPath, [...prof, ...tsx(peer, String(port), aux.upstream)], { core: SUT_CORE })
      : start(process.execPath, [...prof, CLI, '--config', cfg], { core: SUT_CORE });
  await waitForPort(port);
  const headers: Record<string, string> = peer ? {} : { Authorization: `Bearer ${(await loginUsers(port, 1))[0]}` };
  const o =
    scenario === 'public'
      ? { url: url(port, '/pub/items') }
      : scenario === 'login'
        ? { url: url(port, '/login'), login: true }
        : { url: url(port, '/api/items'), headers };
  log(`profiling "${scenario}" for ${SECONDS}s...`);
  const r = await throughput({ connections: 64, seconds: SECONDS, ...o });
  log(`${r.rps.toFixed(0)} req/s, p50 ${r.p50} ms, p99 ${r.p99} ms, errors ${r.errors}`);
  if (!peer) {
    const text = await (await fetch(url(port, '/metrics'))).text();
    log(text.split('\n').filter((l) => /^wxgate_(session_lookups_total|session_store_errors_total|upstream_errors_total)/.test(l)).join('\n'));
  }
  await stop(gw);
  const file = readdirSync(outDir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error('no profile was written');
  const profile = JSON.parse(readFileSync(join(outDir, file), 'utf8')) as { nodes: Node[]; samples: number[] };
  const total = profile.samples.length;
  const byFn = new Map<string, number>();
  const byOwner = new Map<string, number>();
  for (const n of profile.nodes) {
    const hits = n.hitCount ?? 0;
    if (!hits) continue;
    const f = n.callFrame;
    const name = f.functionName === '(idle)' || f.functionName === '(program)' || f.functionName === '(garbage collector)' ? f.functionName : `${f.functionName || '(anonymous)'} ${owner(f.url)}:${f.lineNumber + 1}`;
    byFn.set(name, (byFn.get(name) ?? 0) + hits);
    const o = ['(idle)', '(program)', '(garbage collector)'].includes(f.functionName) ? f.functionName : owner(f.url);
    byOwner.set(o, (byOwner.get(o) ?? 0) + hits);
  }
  // inclusive: a sample counts once for every owner on its stack
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const inclusive = new Map<string, number>();
  for (const n of profile.nodes) {
    const hits = n.hitCount ?? 0;
    if (!hits) continue;
    const seen = new Set<string>();
    for (let id: number | undefined = n.id; id !== undefined; id = parent.get(id)) {
      const f = byId.get(id)!.callFrame;
      if (f.url) seen.add(owner(f.url).replace(/ .*/, ''));
    }
    for (const o of seen) inclusive.set(o, (inclusive.get(o) ?? 0) + hits);
  }
  const pct = (x: number) => `${((100 * x) / total).toFixed(1)}%`;
  const top = (m: Map<string, number>, k: number) => [...m].sort((a, b) => b[1] - a[1]).slice(0, k);
  console.log(`\n## ${scenario}: ${r.rps.toFixed(0)} req/s; ${total} samples; profile ${join(outDir, file)}\n\nself time by owner:`);
  for (const [k, v] of top(byOwner, 20)) console.log(`  ${pct(v).padStart(6)}  ${k}`);
  console.log('\ninclusive time by package (a sample counts for every package on its stack):');
  for (const [k, v] of top(inclusive, 20)) console.log(`  ${pct(v).padStart(6)}  ${k}`);
  console.log('\nself time by function (top 30):');
  for (const [k, v] of top(byFn, 30)) console.log(`  ${pct(v).padStart(6)}  ${k}`);
  process.exit(0);
}

main().catch((err) => {
  console.error('[bench] failed:', err);
  process.exit(1);
});
