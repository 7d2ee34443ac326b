/**
 * npm run bench — wxgate against the proxies people would use instead, on this machine's loopback.
 *
 * Starts an upstream, the WeChat simulator and a redis-server (core 1, with the load tool), and the
 * processes under test (core 0): the gateway built from this checkout, the same with its LRU off,
 * plain http-proxy, a minimal undici proxy, a bare node proxy (node's http server and parser, nothing
 * else: the floor of any node gateway), @fastify/http-proxy, and nginx proxy_pass / auth_request when
 * nginx is installed (`apt-get install -y nginx-light wrk`: the bench's, not the product's).
 * Targets are measured interleaved, round after round; the median of each is reported.
 *
 *   BENCH_ROUNDS=3 BENCH_SECONDS=5 npm run bench          (defaults)
 *   npm run bench -- --smoke                             (one short round: does it still run?)
 *   npm run bench -- --workers N                         (server.workers 1..N against nginx with as many worker_processes)
 *   BENCH_ONLY='warm|public' npm run bench               (a subset, with plain http-proxy)
 *   BENCH_LATENCY=0 npm run bench                        (skip the fixed-rate latency runs)
 *   BENCH_UPSTREAM=nginx npm run bench                   (the upstream is nginx `return 200`, cheaper than node's: every target alike)
 *   BENCH_BASELINE=/other/checkout/dist/cli.js BENCH_ONLY=warm npm run bench   (BENCH_BASELINE_NO_LIMITS=1 before limits.login;
 *                                                          BENCH_BASELINE_NODE_FLAGS='--no-allocation-site-pretenuring'
 *                                                          for a build older than src/v8-flags.ts)
 *                                                         (another build of wxgate, e.g. an earlier commit's,
 *                                                          measured interleaved with this one, warm LRU)
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { atRate, HAS_WRK, throughput, type LoadResult } from './lib/load.js';
import type { ChildProcess } from 'node:child_process';
import { cpuMicros, freePort, has, HAS_TASKSET, median, rssOf, start, stop, SUT_CORE, waitForPort, withChildren } from './lib/procs.js';
import { CLI, gatewayConfig, gcSeconds, log, loginUsers, ROOT, startAux, tsx, url, work } from './lib/setup.js';

const SMOKE = process.argv.includes('--smoke');
const ROUNDS = SMOKE ? 1 : Number(process.env.BENCH_ROUNDS ?? 3);
const SECONDS = SMOKE ? 1 : Number(process.env.BENCH_SECONDS ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 64);
const USERS = SMOKE ? 200 : Number(process.env.BENCH_USERS ?? 10_000);

async function main() {
  // npm run bench -- --workers N: the scaling table of server.workers against nginx (bench/workers.ts)
  const w = process.argv.indexOf('--workers');
  if (w >= 0) {
    await (await import('./workers.js')).scaling(Number(process.argv[w + 1]));
    process.exit(0);
  }
  const ports = Object.fromEntries(
    await Promise.all(['gw', 'gwNoLru', 'httpProxy', 'undici', 'native', 'fastify', 'auth', 'nginx', 'nginxAuth', 'baseline'].map(async (k) => [k, await freePort()])),
  ) as Record<string, number>;

  log(`machine: ${(await import('node:os')).cpus().length} cores; pinning ${HAS_TASKSET ? 'on' : 'off (needs 2 cores and taskset)'}; load tool: ${HAS_WRK ? 'wrk' : 'autocannon'}`);
  // helpers on core 1, processes under test on core 0
  const upstreamKind = process.env.BENCH_UPSTREAM === 'nginx' && has('nginx') ? 'nginx' : 'node';
  log(`upstream: ${upstreamKind === 'nginx' ? 'nginx return 200' : 'node http (bench/peers/upstream.ts)'}`);
  const aux = await startAux({ upstream: upstreamKind });
  ports.up = aux.up;
  ports.redis = aux.redis;
  const upstream = aux.upstream;
  const gw = start(process.execPath, [CLI, '--config', gatewayConfig(aux, ports.gw!, 100_000)], { core: SUT_CORE });
  const gwNoLru = start(process.execPath, [CLI, '--config', gatewayConfig(aux, ports.gwNoLru!, 0)], { core: SUT_CORE });
  // BENCH_BASELINE: another build of the gateway, same config but its own key prefix in the same Redis
  // (BENCH_BASELINE_NO_LIMITS=1 for a build older than limits.login, which had no login limit)
  const BASELINE = process.env.BENCH_BASELINE;
  const baselineSession = { store: 'redis', redis: { url: `redis://127.0.0.1:${aux.redis}`, keyPrefix: 'baseline:' }, cache: { max: 100_000, ttl: '60s' }, maxPerUser: 5 };
  const baseline = BASELINE
    ? start(process.execPath, [...(process.env.BENCH_BASELINE_NODE_FLAGS ?? '').split(' ').filter(Boolean), BASELINE, '--config', gatewayConfig(aux, ports.baseline!, 100_000, { session: baselineSession, ...(process.env.BENCH_BASELINE_NO_LIMITS === '1' ? { limits: undefined } : {}) })], { core: SUT_CORE })
    : undefined;
  const httpProxyPeer = start(process.execPath, tsx('peers/http-proxy.ts', String(ports.httpProxy), upstream), { core: SUT_CORE });
  const undiciPeer = start(process.execPath, tsx('peers/undici-proxy.ts', String(ports.undici), upstream), { core: SUT_CORE });
  const nativePeer = start(process.execPath, tsx('peers/bare-node-proxy.ts', String(ports.native), upstream), { core: SUT_CORE });
  const fastifyPeer = start(process.execPath, tsx('peers/fastify-proxy.ts', String(ports.fastify), upstream), { core: SUT_CORE });
  let authService: ChildProcess | undefined;
  let nginx: ChildProcess | undefined;
  const withNginx = has('nginx');
  if (withNginx) {
    authService = start(process.execPath, tsx('peers/auth-service.ts', String(ports.auth), `redis://127.0.0.1:${ports.redis}`), { core: SUT_CORE });
    const dir = join(work, 'nginx');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'nginx.conf'),
      `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  upstream up { server 127.0.0.1:${ports.up}; keepalive 64; }
  upstream authsvc { server 127.0.0.1:${ports.auth}; keepalive 64; }
  server {
    listen 127.0.0.1:${ports.nginx};
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:${ports.nginxAuth};
    location / {
      auth_request /_auth;
      auth_request_set $openid $upstream_http_x_openid;
      proxy_set_header X-Openid $openid;
      proxy_set_header Authorization "";
      proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
    }
    location = /_auth {
      internal;
      proxy_pass http://authsvc; proxy_pass_request_body off; proxy_set_header Content-Length "";
      proxy_http_version 1.1; proxy_set_header Connection "";
    }
  }
}
`,
    );
    nginx = start('nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { core: SUT_CORE });
  } else log('nginx is not installed: its two peers are skipped');
  await Promise.all(
    [ports.gw, ports.gwNoLru, ports.httpProxy, ports.undici, ports.native, ports.fastify, ...(withNginx ? [ports.auth, ports.nginx, ports.nginxAuth] : []), ...(baseline ? [ports.baseline] : [])].map((p) =>
      waitForPort(p!),
    ),
  );

  // users: log them in through the gateway (they land in Redis; the warm gateway caches them as used)
  log(`logging in ${USERS} users through the simulator...`);
  const rssBefore = rssOf(gw.pid);
  const tokens = await loginUsers(ports.gw!, USERS);
  const rssAfterLogins = rssOf(gw.pid);
  const tokensFile = join(work, 'tokens.txt');
  writeFileSync(tokensFile, tokens.join('\n'));
  const auth = { Authorization: `Bearer ${tokens[0]}` };
  // as many users as the gateway under test holds, so both carry the same heap
  const baselineAuth = baseline ? { Authorization: `Bearer ${(await loginUsers(ports.baseline!, USERS, 'baseline'))[0]}` } : undefined;

  /** cpu: the processes whose CPU time is the target's own cost (measured per request: robust to a noisy load tool) */
  /** gcPort: a gateway whose /metrics tells its GC time (nodejs_gc_duration_seconds, every kind) */
  type Target = { name: string; run: () => Promise<LoadResult>; rssPid?: number; cpu?: () => number[]; gcPort?: number };
  const tp = (port: number, path: string, extra: Partial<Parameters<typeof throughput>[0]> = {}) => () =>
    throughput({ url: url(port, path), connections: CONNECTIONS, seconds: SECONDS, ...extra });
  const only = process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY, 'i') : undefined;
  const allTargets: Target[] = [
    { name: 'direct (no proxy)', run: tp(ports.up!, '/api/items') },
    { name: 'plain http-proxy', run: tp(ports.httpProxy!, '/api/items'), cpu: () => [httpProxyPeer.pid!] },
    { name: 'undici proxy', run: tp(ports.undici!, '/api/items'), cpu: () => [undiciPeer.pid!] },
    { name: 'bare node proxy', run: tp(ports.native!, '/api/items'), cpu: () => [nativePeer.pid!] },
    { name: '@fastify/http-proxy', run: tp(ports.fastify!, '/api/items'), cpu: () => [fastifyPeer.pid!] },
    ...(withNginx
      ? [
          { name: 'nginx proxy_pass', run: tp(ports.nginx!, '/api/items'), cpu: () => withChildren(nginx?.pid) },
          { name: 'nginx auth_request+Redis', run: tp(ports.nginxAuth!, '/api/items', { headers: auth }), cpu: () => [...withChildren(nginx?.pid), authService!.pid!] },
        ]
      : []),
    { name: 'wxgate auth, warm LRU', cpu: () => [gw.pid!], gcPort: ports.gw, run: tp(ports.gw!, '/api/items', { headers: auth }), rssPid: gw.pid },
    ...(baseline
      ? [{ name: 'baseline build: auth, warm LRU', cpu: () => [baseline.pid!], gcPort: ports.baseline, run: tp(ports.baseline!, '/api/items', { headers: baselineAuth }), rssPid: baseline.pid }]
      : []),
    { name: 'wxgate public route', cpu: () => [gw.pid!], gcPort: ports.gw, run: tp(ports.gw!, '/pub/items'), rssPid: gw.pid },
    { name: 'wxgate auth, LRU off (Redis)', cpu: () => [gwNoLru.pid!], gcPort: ports.gwNoLru, run: tp(ports.gwNoLru!, '/api/items', { headers: auth }), rssPid: gwNoLru.pid },
    { name: `wxgate auth, ${USERS} users`, cpu: () => [gw.pid!], gcPort: ports.gw, run: tp(ports.gw!, '/api/items', { tokensFile }), rssPid: gw.pid },
    { name: 'wxgate /login (Redis, simulator)', cpu: () => [gw.pid!], gcPort: ports.gw, run: tp(ports.gw!, '/login', { login: true, connections: 32 }), rssPid: gw.pid },
  ];

  // BENCH_ONLY=regex measures a subset (plain http-proxy always stays: it is what the ratios divide by)
  const targets = allTargets.filter((t) => !only || only.test(t.name) || t.name === 'plain http-proxy');
  log('warm-up: one pass over every target...');
  for (const t of targets) await t.run();

  const results = new Map<string, LoadResult[]>();
  const rss = new Map<string, number[]>();
  const cpuPerReq = new Map<string, number[]>();
  const gcPerReq = new Map<string, number[]>();
  const cpuNow = (t: Target) => (t.cpu ? t.cpu().reduce((a, pid) => a + cpuMicros(pid), 0) : NaN);
  for (let r = 1; r <= ROUNDS; r++) {
    log(`round ${r}/${ROUNDS}: throughput at ${CONNECTIONS} connections, ${SECONDS}s each`);
    for (const t of targets) {
      const cpu0 = cpuNow(t);
      const gc0 = t.gcPort ? await gcSeconds(t.gcPort) : NaN;
      const res = await t.run();
      cpuPerReq.set(t.name, [...(cpuPerReq.get(t.name) ?? []), (cpuNow(t) - cpu0) / (res.rps * SECONDS)]);
      if (t.gcPort) gcPerReq.set(t.name, [...(gcPerReq.get(t.name) ?? []), ((await gcSeconds(t.gcPort)) - gc0) * 1e6 / (res.rps * SECONDS)]);
      results.set(t.name, [...(results.get(t.name) ?? []), res]);
      if (t.rssPid) rss.set(t.name, [...(rss.get(t.name) ?? []), rssOf(t.rssPid)]);
    }
  }
  const med = (name: string, k: keyof LoadResult) => median((results.get(name) ?? []).map((x) => x[k]));

  // latency at a fixed rate: 50% and 80% of the gateway's maximum, same rate for the gateway and plain http-proxy
  const gwMax = med('wxgate auth, warm LRU', 'rps');
  const latency: Array<{ load: string; target: string; p50: number; p99: number; achieved: number; errors: number }> = [];
  for (const pct of process.env.BENCH_LATENCY === '0' ? [] : [0.5, 0.8]) {
    const rate = Math.round(gwMax * pct);
    const rows: Record<string, Array<LoadResult & { achieved: number }>> = { 'plain http-proxy': [], 'wxgate auth, warm LRU': [] };
    for (let r = 1; r <= ROUNDS; r++) {
      log(`round ${r}/${ROUNDS}: latency at ${rate} req/s (${pct * 100}% of the gateway's max)`);
      rows['plain http-proxy']!.push(await atRate({ url: url(ports.httpProxy!, '/api/items'), rate, seconds: SECONDS }));
      rows['wxgate auth, warm LRU']!.push(await atRate({ url: url(ports.gw!, '/api/items'), rate, seconds: SECONDS, headers: auth }));
    }
    for (const [target, rs] of Object.entries(rows)) {
      latency.push({
        load: `${pct * 100}% (${rate}/s)`,
        target,
        p50: median(rs.map((x) => x.p50)),
        p99: median(rs.map((x) => x.p99)),
        achieved: median(rs.map((x) => x.achieved)),
        errors: rs.reduce((a, x) => a + x.errors, 0),
      });
    }
  }

  // latency at half of nginx proxy_pass's saturation rate: nginx and the warm gateway at the same rate
  const nginxMax = withNginx ? med('nginx proxy_pass', 'rps') : NaN;
  const nginxHalf: Record<string, Array<LoadResult & { achieved: number }>> = { 'nginx proxy_pass': [], 'wxgate auth, warm LRU': [] };
  if (withNginx && process.env.BENCH_LATENCY !== '0' && nginxMax > 0) {
    const rate = Math.round(nginxMax / 2);
    for (let r = 1; r <= ROUNDS; r++) {
      log(`round ${r}/${ROUNDS}: latency at ${rate} req/s (half of nginx proxy_pass's max)`);
      nginxHalf['nginx proxy_pass']!.push(await atRate({ url: url(ports.nginx!, '/api/items'), rate, seconds: SECONDS }));
      nginxHalf['wxgate auth, warm LRU']!.push(await atRate({ url: url(ports.gw!, '/api/items'), rate, seconds: SECONDS, headers: auth }));
    }
    for (const [target, rs] of Object.entries(nginxHalf)) {
      latency.push({
        load: `half of nginx's max (${rate}/s)`,
        target,
        p50: median(rs.map((x) => x.p50)),
        p99: median(rs.map((x) => x.p99)),
        achieved: median(rs.map((x) => x.achieved)),
        errors: rs.reduce((a, x) => a + x.errors, 0),
      });
    }
  }
  const halfP99 = (target: string) => latency.find((l) => l.load.startsWith('half') && l.target === target)?.p99 ?? NaN;

  // report
  const f = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : '-');
  const lines: string[] = [];
  lines.push(`| target | req/s | p50 ms | p99 ms | errors | CPU µs/req | GC µs/req | RSS MB |`, `| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |`);
  for (const t of targets) {
    const rs = results.get(t.name) ?? [];
    lines.push(
      `| ${t.name} | ${f(med(t.name, 'rps'))} | ${f(med(t.name, 'p50'), 2)} | ${f(med(t.name, 'p99'), 2)} | ${rs.reduce((a, x) => a + x.errors, 0)} | ${f(median(cpuPerReq.get(t.name) ?? []))} | ${t.gcPort ? f(median(gcPerReq.get(t.name) ?? []), 1) : ''} | ${t.rssPid ? f(median(rss.get(t.name) ?? []) / 1048576, 0) : ''} |`,
    );
  }
  lines.push('', `| fixed-rate latency | target | achieved req/s | p50 ms | p99 ms | errors |`, `| --- | --- | ---: | ---: | ---: | ---: |`);
  for (const l of latency) lines.push(`| ${l.load} | ${l.target} | ${f(l.achieved)} | ${f(l.p50, 3)} | ${f(l.p99, 3)} | ${l.errors} |`);

  const hp = med('plain http-proxy', 'rps');
  const cpu = (name: string) => median(cpuPerReq.get(name) ?? []);
  const lat50 = (target: string) => latency.find((l) => l.load.startsWith('50%') && l.target === target) ?? { p50: NaN, p99: NaN };
  const checks: Array<[string, number | string, boolean]> = [
    ['auth, warm LRU ≥ 0.85 × http-proxy', f(gwMax / hp, 2), gwMax / hp >= 0.85],
    ['public route ≥ 0.90 × http-proxy', f(med('wxgate public route', 'rps') / hp, 2), med('wxgate public route', 'rps') / hp >= 0.9],
    ['LRU off ≥ 0.60 × http-proxy', f(med('wxgate auth, LRU off (Redis)', 'rps') / hp, 2), med('wxgate auth, LRU off (Redis)', 'rps') / hp >= 0.6],
    ...(withNginx
      ? ([
          [
            'LRU off ahead of nginx auth_request',
            f(med('wxgate auth, LRU off (Redis)', 'rps') / med('nginx auth_request+Redis', 'rps'), 2),
            med('wxgate auth, LRU off (Redis)', 'rps') > med('nginx auth_request+Redis', 'rps'),
          ],
        ] as Array<[string, string, boolean]>)
      : []),
    ['added p50 at 50% load ≤ 1 ms', `${f(lat50('wxgate auth, warm LRU').p50 - lat50('plain http-proxy').p50, 3)} ms`, lat50('wxgate auth, warm LRU').p50 - lat50('plain http-proxy').p50 <= 1],
    ['added p99 at 50% load ≤ 3 ms', `${f(lat50('wxgate auth, warm LRU').p99 - lat50('plain http-proxy').p99, 3)} ms`, lat50('wxgate auth, warm LRU').p99 - lat50('plain http-proxy').p99 <= 3],
    ...(withNginx
      ? ([
          ['auth, warm LRU ≥ 0.6 × nginx proxy_pass', f(gwMax / nginxMax, 2), gwMax / nginxMax >= 0.6],
          ['p99 at half of nginx\'s max ≤ 2 × nginx\'s p99', f(halfP99('wxgate auth, warm LRU') / halfP99('nginx proxy_pass'), 2), halfP99('wxgate auth, warm LRU') <= 2 * halfP99('nginx proxy_pass')],
        ] as Array<[string, string, boolean]>)
      : []),
    ['auth, warm LRU ≥ 1.2 × @fastify/http-proxy', f(gwMax / med('@fastify/http-proxy', 'rps'), 2), gwMax / med('@fastify/http-proxy', 'rps') >= 1.2],
    ['/login ≥ 1,500 logins/s', f(med('wxgate /login (Redis, simulator)', 'rps')), med('wxgate /login (Redis, simulator)', 'rps') >= 1500],
    ['undici proxy ÷ http-proxy (what the stack leaves)', f(med('undici proxy', 'rps') / hp, 2), true],
    ['info: CPU per request, auth warm LRU ÷ http-proxy', f(cpu('wxgate auth, warm LRU') / cpu('plain http-proxy'), 2), true],
    ['info: CPU per request, auth warm LRU ÷ nginx proxy_pass', f(cpu('wxgate auth, warm LRU') / cpu('nginx proxy_pass'), 2), true],
    ['info: CPU per request, auth warm LRU ÷ @fastify/http-proxy', f(cpu('wxgate auth, warm LRU') / cpu('@fastify/http-proxy'), 2), true],
    ['info: CPU per request, public route ÷ http-proxy', f(cpu('wxgate public route') / cpu('plain http-proxy'), 2), true],
    ['info: CPU per request, LRU off ÷ nginx auth_request (+ its auth service)', f(cpu('wxgate auth, LRU off (Redis)') / cpu('nginx auth_request+Redis'), 2), true],
    // what any gateway on node's http server and parser can reach: the bare node proxy does no work at all
    ...(withNginx
      ? ([
          ['info: bare node proxy ÷ nginx proxy_pass (the floor of node\'s http server: req/s, CPU per request)', `${f(med('bare node proxy', 'rps') / nginxMax, 2)}, ${f(cpu('nginx proxy_pass') / cpu('bare node proxy'), 2)}`, true],
          ['info: the p99 target\'s rate (half of nginx\'s max) ÷ the warm gateway\'s max', f(nginxMax / 2 / gwMax, 2), true],
        ] as Array<[string, string, boolean]>)
      : []),
  ];
  lines.push('', `| target | measured | |`, `| --- | ---: | --- |`);
  // a smoke round (one second, few users) only shows that every target runs: its figures judge nothing
  const verdict = (name: string, value: number | string, ok: boolean) =>
    name.startsWith('undici') || name.startsWith('info') ? 'info' : value === '-' || String(value).startsWith('- ') ? 'n/a' : SMOKE ? 'not judged (smoke)' : ok ? 'PASS' : 'FAIL';
  for (const [name, value, ok] of checks) lines.push(`| ${name} | ${value} | ${verdict(name, value, ok)} |`);
  lines.push('', `RSS of the warm gateway: ${f(rssBefore / 1048576)} MB before ${USERS} logins, ${f(rssAfterLogins / 1048576)} MB after.`);
  const report = lines.join('\n');
  console.log(report);
  mkdirSync(join(ROOT, '.bench'), { recursive: true });
  writeFileSync(join(ROOT, '.bench', 'last-run.md'), `${report}\n`);
  for (const c of [gw, gwNoLru, ...(baseline ? [baseline] : [])]) await stop(c);
  if (SMOKE) {
    // the smoke run (part of npm test) checks that every target answered, and without errors
    const broken = targets.filter((t) => !(med(t.name, 'rps') > 0) || (results.get(t.name) ?? []).some((x) => x.errors > 0));
    if (broken.length) {
      console.error(`[bench] smoke: no answers or errors from ${broken.map((t) => t.name).join(', ')}`);
      process.exit(1);
    }
  }
  process.exit(0);
}

main().catch((err) => {
  console.error('[bench] failed:', err);
  process.exit(1);
});
