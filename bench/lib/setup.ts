import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { AUX_CORE, freePort, start, waitForPort } from './procs.js';

/** What every bench script starts on the aux core: upstream, redis-server, WeChat simulator. */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = join(ROOT, 'dist/cli.js');
export const APPID = 'wx0123456789abcdef';
export const work = mkdtempSync(join(tmpdir(), 'wxgate-bench-'));
export const tsx = (file: string, ...args: string[]) => ['--import', 'tsx', join(ROOT, 'bench', file), ...args];
export const log = (...a: unknown[]) => console.error('[bench]', ...a);
export const url = (port: number, path = '/api/items') => `http://127.0.0.1:${port}${path}`;

/** The upstream's answer (bench/peers/upstream.ts sends the same). */
export const UPSTREAM_BODY = JSON.stringify({ ok: true, items: [1, 2, 3], note: 'a small JSON answer from the upstream' });

export interface Aux {
  up: number;
  redis: number;
  sim: number;
  upstream: string;
}

/**
 * The upstream every target proxies to: the node server of bench/peers/upstream.ts, or with
 * `upstream: 'nginx'` (BENCH_UPSTREAM=nginx for npm run bench) nginx answering the same body with
 * `return 200`: it costs the aux core less per request, so the load tool's core caps the fastest
 * targets later. No /slow there (the soak's aborts need the node one).
 */
export async function startAux(opts: { upstream?: 'node' | 'nginx' } = {}): Promise<Aux> {
  const [up, redis, sim] = await Promise.all([freePort(), freePort(), freePort()]);
  if (opts.upstream === 'nginx') {
    const dir = join(work, 'nginx-upstream');
    mkdirSync(dir, { recursive: true });
    const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `${k}_temp_path ${dir};`).join(' ');
    writeFileSync(
      join(dir, 'nginx.conf'),
      `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off; ${temp}
  keepalive_requests 1000000; keepalive_timeout 60s;
  server { listen 127.0.0.1:${up}; location / { default_type application/json; return 200 '${UPSTREAM_BODY}'; } }
}
`,
    );
    start('nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { core: AUX_CORE });
  } else start(process.execPath, tsx('peers/upstream.ts', String(up)), { core: AUX_CORE });
  start('redis-server', ['--port', String(redis), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { core: AUX_CORE });
  start(process.execPath, [CLI, 'simulate', '--port', String(sim)], { core: AUX_CORE });
  await Promise.all([up, redis, sim].map((p) => waitForPort(p)));
  return { up: up!, redis: redis!, sim: sim!, upstream: `http://127.0.0.1:${up}` };
}

/** A gateway config for the bench: Redis store, /api (auth) and /pub (public) on the bench upstream. */
export function gatewayConfig(aux: Aux, port: number, cacheMax: number, extra: Record<string, unknown> = {}): string {
  const file = join(work, `gateway-${port}.yaml`);
  writeFileSync(
    file,
    stringify({
      server: { host: '127.0.0.1', port },
      wechat: { apiBase: `http://127.0.0.1:${aux.sim}`, apps: [{ appid: APPID, secret: 'bench-secret' }] },
      session: { store: 'redis', redis: { url: `redis://127.0.0.1:${aux.redis}` }, cache: { max: cacheMax, ttl: '60s' }, maxPerUser: 5 },
      routes: [
        { path: '/api', upstream: aux.upstream, auth: 'required' },
        { path: '/pub', upstream: aux.upstream, auth: 'none' },
      ],
      log: { level: 'warn' },
      // every bench client is 127.0.0.1: the login rate limit would refuse the /login target
      limits: { login: { perIp: 0 } },
      ...extra,
    }),
  );
  return file;
}

/** Logs `n` simulated users in through a gateway; returns their tokens. */
export async function loginUsers(port: number, n: number, prefix = 'user'): Promise<string[]> {
  // the gateway listens before its Redis connection is up: /readyz says when logins can be stored
  for (let i = 0; i < 100 && (await fetch(url(port, '/readyz')).then((r) => r.status, () => 0)) !== 200; i++) await new Promise((r) => setTimeout(r, 100));
  const tokens: string[] = [];
  for (let i = 0; i < n; i += 100) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(100, n - i) }, async (_, j) => {
        const res = await fetch(url(port, '/login'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: `${prefix}${i + j}.seed` }) });
        if (res.status !== 200) throw new Error(`login answered ${res.status}: ${await res.text()}`);
        return ((await res.json()) as { token: string }).token;
      }),
    );
    tokens.push(...batch);
  }
  return tokens;
}

/** Seconds the gateway on `port` spent in GC so far, every kind, from its /metrics (prom-client's default metrics). */
export async function gcSeconds(port: number): Promise<number> {
  const text = await (await fetch(url(port, '/metrics'))).text();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith('wxgate_nodejs_gc_duration_seconds_sum')) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}
