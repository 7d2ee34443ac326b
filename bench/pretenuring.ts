/**
 * npm run bench:pretenuring — why the gateway turns V8's allocation-site pretenuring off (src/v8-flags.ts).
 *
 * Two gateways of this checkout, one with V8's default (WXGATE_V8_PRETENURING=1) and one as shipped, go
 * through the same thing: 200 logins, then a burst of 300 requests to a slow upstream path with full GCs
 * while they are in flight (as any full GC under load may fall), then warm-LRU load, interleaved round
 * after round. Printed per gateway: req/s, CPU and GC time per request, what each scavenge kept
 * (--trace-gc-nvp's new_space_survived and promoted) and RSS.
 *
 *   BENCH_ROUNDS=3 BENCH_SECONDS=4 npm run bench:pretenuring
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { throughput } from './lib/load.js';
import { cpuMicros, freePort, median, rssOf, start, stop, SUT_CORE, waitForPort } from './lib/procs.js';
import { CLI, gatewayConfig, gcSeconds, log, loginUsers, ROOT, startAux, url, work } from './lib/setup.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);

/** Mean KB per scavenge that survived (stayed young or was promoted) and was promoted, from the lines after `from`. */
function scavenges(file: string, from: number): { lines: number; survivedKB: number; promotedKB: number } {
  const lines = readFileSync(file, 'utf8').split('\n');
  const s = lines.slice(from).filter((l) => l.includes('gc=s '));
  const mean = (re: RegExp) => s.reduce((a, l) => a + Number(re.exec(l)?.[1] ?? 0), 0) / Math.max(1, s.length) / 1024;
  return { lines: lines.length, survivedKB: mean(/new_space_survived=(\d+)/), promotedKB: mean(/ promoted=(\d+)/) };
}

async function main() {
  const aux = await startAux();
  const variants = [
    { name: "V8's default (pretenuring on)", env: { WXGATE_V8_PRETENURING: '1' } },
    { name: 'wxgate as shipped (pretenuring off)', env: {} },
  ];
  type Row = { rps: number; cpu: number; gc: number; survivedKB: number; promotedKB: number; rss: number };
  const gws: Array<{ name: string; port: number; pid: number; child: ChildProcess; gcLog: string; auth: Record<string, string>; rows: Row[] }> = [];
  for (const [i, v] of variants.entries()) {
    const port = await freePort();
    const gcLog = join(work, `gc-${i}.log`);
    const child = start(
      process.execPath,
      ['--expose-gc', '--trace-gc-nvp', '--require', join(ROOT, 'bench/lib/gc-on-signal.cjs'), CLI, '--config', gatewayConfig(aux, port, 100_000, { session: { store: 'redis', redis: { url: `redis://127.0.0.1:${aux.redis}`, keyPrefix: `v${i}:` }, cache: { max: 100_000, ttl: '60s' } } })],
      { core: SUT_CORE, env: v.env, stdoutFile: gcLog },
    );
    await waitForPort(port);
    const [token] = await loginUsers(port, 200, `v${i}-`);
    const auth = { Authorization: `Bearer ${token}` };
    // the burst: 300 requests in flight on a slow path (200 ms), and a full GC among them
    log(`${v.name}: 200 logins, then 300 requests in flight and a full GC`);
    const burst = Promise.all(Array.from({ length: 300 }, () => fetch(url(port, '/api/slow'), { headers: auth }).then((r) => r.text())));
    for (let k = 0; k < 3; k++) {
      await new Promise((r) => setTimeout(r, k ? 20 : 100));
      child.kill('SIGUSR2');
    }
    await burst;
    gws.push({ name: v.name, port, pid: child.pid!, child, gcLog, auth, rows: [] });
  }
  for (let r = 1; r <= ROUNDS; r++) {
    log(`round ${r}/${ROUNDS}: warm LRU, 64 connections, ${SECONDS}s each`);
    for (const g of gws) {
      const { lines } = scavenges(g.gcLog, 0);
      const [cpu0, gc0] = [cpuMicros(g.pid), await gcSeconds(g.port)];
      const res = await throughput({ url: url(g.port, '/api/items'), connections: 64, seconds: SECONDS, headers: g.auth });
      const n = res.rps * SECONDS;
      const sc = scavenges(g.gcLog, lines - 1);
      g.rows.push({ rps: res.rps, cpu: (cpuMicros(g.pid) - cpu0) / n, gc: ((await gcSeconds(g.port)) - gc0) * 1e6 / n, survivedKB: sc.survivedKB, promotedKB: sc.promotedKB, rss: rssOf(g.pid) / 1048576 });
    }
  }
  const m = (g: (typeof gws)[number], k: keyof Row) => median(g.rows.map((x) => x[k]));
  const out = ['| gateway | req/s | CPU µs/req | GC µs/req | KB survived per scavenge | KB promoted per scavenge | RSS MB |', '| --- | ---: | ---: | ---: | ---: | ---: | ---: |'];
  for (const g of gws) out.push(`| ${g.name} | ${m(g, 'rps').toFixed(0)} | ${m(g, 'cpu').toFixed(0)} | ${m(g, 'gc').toFixed(1)} | ${m(g, 'survivedKB').toFixed(0)} | ${m(g, 'promotedKB').toFixed(0)} | ${m(g, 'rss').toFixed(0)} |`);
  console.log(out.join('\n'));
  for (const g of gws) await stop(g.child);
  process.exit(0);
}

main().catch((err) => {
  console.error('[bench] failed:', err);
  process.exit(1);
});
