/**
 * npm run soak — 10 minutes at 50% of the gateway's maximum, with a share of clients leaving in the
 * middle of responses from a slow upstream path. Samples the gateway every 10 s and checks that its
 * RSS and heap stay flat, its upstream sockets stay flat, and TIME_WAIT sockets of its own stay under 1,000.
 *
 *   SOAK_SECONDS=600 SOAK_ABORT_SHARE=0.05 npm run soak      (defaults)
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { throughput } from './lib/load.js';
import { AUX_CORE, freePort, HAS_TASKSET, rssOf, start, stop, SUT_CORE, waitForPort } from './lib/procs.js';
import { CLI, gatewayConfig, log, loginUsers, ROOT, startAux, url } from './lib/setup.js';

const SECONDS = Number(process.env.SOAK_SECONDS ?? 600);
const ABORT_SHARE = Number(process.env.SOAK_ABORT_SHARE ?? 0.05);
const SAMPLE_EVERY = Math.min(10, Math.max(1, Math.floor(SECONDS / 30)));

function child(file: string, o: object): Promise<Record<string, number>> {
  const args = ['--import', 'tsx', join(ROOT, 'bench/lib', file), JSON.stringify(o)];
  const [cmd, argv] = HAS_TASKSET ? ['taskset', ['-c', AUX_CORE, process.execPath, ...args]] : [process.execPath, args];
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as Record<string, number>) : reject(new Error(`${file} exited ${code}`))));
  });
}

/** TCP sockets in a state, counted with ss(8) and a filter. */
function sockets(state: string, filter: string): number {
  const r = spawnSync('ss', ['-Htan', 'state', state, filter], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.split('\n').filter(Boolean).length : NaN;
}

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(url(port, '/metrics'))).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([\\d.e+]+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

/** "none", or the statuses >= 400, the answers cut off and the requests left unanswered 5 s after the load ended. */
function describeErrors(l: { failed?: Record<string, number>; cutOff?: number; unanswered?: number }): string {
  const parts = Object.entries(l.failed ?? {}).map(([status, n]) => `${n} × ${status}`);
  if (l.cutOff) parts.push(`${l.cutOff} cut off mid-answer`);
  if (l.unanswered) parts.push(`${l.unanswered} unanswered`);
  return parts.join(', ') || 'none';
}

async function main() {
  const aux = await startAux();
  const port = await freePort();
  const gw = start(process.execPath, [CLI, '--config', gatewayConfig(aux, port, 100_000)], { core: SUT_CORE });
  await waitForPort(port);
  const tokens = await loginUsers(port, 100);
  const headers = { Authorization: `Bearer ${tokens[0]}` };

  const max = (await throughput({ url: url(port, '/api/items'), connections: 64, seconds: 5, headers })).rps;
  const rate = Math.round(max * 0.5);
  const abortRate = Math.max(1, Math.round(rate * ABORT_SHARE));
  log(`gateway max ${max.toFixed(0)} req/s; soaking ${SECONDS}s at ${rate} req/s, of which ${abortRate}/s leave mid-response on /api/slow`);

  /** `at`: wall-clock ms, to tell afterwards which samples were taken under load */
  const samples: Array<{ t: number; at: number; rss: number; heap: number; upstream: number; timeWait: number; twUpstream: number; fds: number }> = [];
  const t0 = Date.now();
  const load = child('rate-client.ts', { url: url(port, '/api/items'), rate: rate - abortRate, seconds: SECONDS, headers, connections: 128 });
  const aborts = child('aborter.ts', { url: url(port, '/api/slow'), rate: abortRate, seconds: SECONDS, headers });
  const own = `( sport = :${port} or dport = :${aux.up} )`;
  while (Date.now() - t0 < SECONDS * 1000) {
    await new Promise((r) => setTimeout(r, SAMPLE_EVERY * 1000));
    const at = Date.now();
    const s = {
      t: Math.round((at - t0) / 1000),
      at,
      rss: rssOf(gw.pid) / 1048576,
      heap: (await metric(port, 'wxgate_nodejs_heap_size_used_bytes')) / 1048576,
      upstream: sockets('established', `( dport = :${aux.up} )`),
      timeWait: sockets('time-wait', own),
      twUpstream: sockets('time-wait', `( dport = :${aux.up} )`),
      fds: await metric(port, 'wxgate_process_open_fds'),
    };
    samples.push(s);
    log(`t=${s.t}s rss ${s.rss.toFixed(0)} MB, heap ${s.heap.toFixed(0)} MB, upstream sockets ${s.upstream}, TIME_WAIT ${s.timeWait} (${s.twUpstream} to the upstream), fds ${s.fds}`);
  }
  const [l, a] = await Promise.all([load, aborts]);
  const upstreamErrors = (await (await fetch(url(port, '/metrics'))).text())
    .split('\n')
    .filter((x) => x.startsWith('wxgate_upstream_errors_total'))
    .map((x) => x.replace('wxgate_upstream_errors_total', ''))
    .join(', ');
  await stop(gw);

  // Only samples taken while both load clients were running count: the clients start a moment after t0
  // (process start-up, connections) and the loop's last sample may come after they stopped, when idle
  // upstream sockets close and the heap settles, which would make a growing gateway look flat. The
  // clients report when their load ran (startedAt, endedAt: wall-clock ms).
  const loadFrom = Math.max(l.startedAt ?? t0, a.startedAt ?? t0);
  const loadTo = Math.min(l.endedAt ?? t0 + SECONDS * 1000, a.endedAt ?? t0 + SECONDS * 1000);
  const loaded = samples.filter((x) => x.at >= loadFrom && x.at <= loadTo);
  const unloaded = samples.length - loaded.length;
  // flat: the last fifth of the loaded samples against the second fifth (the first is warm-up)
  const part = (k: 'rss' | 'heap' | 'upstream', from: number, to: number) => {
    const xs = loaded.slice(Math.floor(loaded.length * from), Math.max(Math.floor(loaded.length * to), Math.floor(loaded.length * from) + 1)).map((x) => x[k]);
    return xs.reduce((p, x) => p + x, 0) / xs.length;
  };
  const growth = (k: 'rss' | 'heap' | 'upstream') => ({ early: part(k, 0.2, 0.4), late: part(k, 0.8, 1) });
  const rss = growth('rss');
  const heap = growth('heap');
  const up = growth('upstream');
  const maxTw = Math.max(...samples.map((x) => x.timeWait));
  const checks: Array<[string, string, boolean]> = [
    ['enough samples under load (≥ 5)', `${loaded.length} of ${samples.length} (${unloaded} before or after the load, not counted)`, loaded.length >= 5],
    ['RSS flat (late ≤ early + 10% or + 10 MB)', `${rss.early.toFixed(0)} → ${rss.late.toFixed(0)} MB`, rss.late <= Math.max(rss.early * 1.1, rss.early + 10)],
    ['heap flat (late ≤ early + 10% or + 10 MB)', `${heap.early.toFixed(0)} → ${heap.late.toFixed(0)} MB`, heap.late <= Math.max(heap.early * 1.1, heap.early + 10)],
    ['upstream sockets flat (late ≤ early × 1.5 + 10)', `${up.early.toFixed(0)} → ${up.late.toFixed(0)}`, up.late <= up.early * 1.5 + 10],
    ['TIME_WAIT of the gateway\'s sockets < 1,000', `max ${maxTw}`, maxTw < 1000],
  ];
  const lines = [
    `Soak: ${SECONDS}s at ${rate} req/s (50% of ${max.toFixed(0)}), ${abortRate}/s aborting on /api/slow.`,
    `Load: ${l.done} answered, ${l.errors} errors (${describeErrors(l)}), p50 ${l.p50?.toFixed(2)} ms, p99 ${l.p99?.toFixed(2)} ms; connections reopened after the gateway closed idle ones: ${l.reconnects} (requests sent again after the keep-alive race: ${l.retried}). Aborters: ${a.sent} sent, ${a.aborted} left early, ${a.completed} completed. wxgate_upstream_errors_total: ${upstreamErrors || 'none'}.`,
    '',
    '| check | measured | |',
    '| --- | --- | --- |',
    ...checks.map(([n, v, ok]) => `| ${n} | ${v} | ${ok ? 'PASS' : 'FAIL'} |`),
    '',
    '| t (s) | RSS MB | heap MB | upstream sockets | TIME_WAIT | open fds |',
    '| ---: | ---: | ---: | ---: | ---: | ---: |',
    ...samples
      .filter((_, i) => i % Math.max(1, Math.floor(samples.length / 12)) === 0 || i === samples.length - 1)
      .map((s) => `| ${s.t}${s.at >= loadFrom && s.at <= loadTo ? '' : ' (no load)'} | ${s.rss.toFixed(0)} | ${s.heap.toFixed(0)} | ${s.upstream} | ${s.timeWait} | ${s.fds} |`),
  ];
  console.log(lines.join('\n'));
  mkdirSync(join(ROOT, '.bench'), { recursive: true });
  writeFileSync(join(ROOT, '.bench', 'last-soak.md'), `${lines.join('\n')}\n`);
  process.exit(checks.every((c) => c[2]) ? 0 : 1);
}

main().catch((err) => {
  console.error('[soak] failed:', err);
  process.exit(1);
});
