/**
 * npm run bench -- --workers N — how the gateway scales with server.workers (node:cluster), against
 * nginx proxy_pass with as many worker_processes: for n = 1 … N, the warm authenticated path
 * (Redis store, LRU on) and nginx, interleaved round after round, medians. With taskset, the n workers
 * (and nginx's n processes) may use cores 0 … n-1; the load tool, upstream, Redis and the simulator stay
 * on the last core, so on a machine with N cores the N-worker row shares a core with the load tool:
 * read it as such (the table says which rows do).
 *
 *   BENCH_ROUNDS=3 BENCH_SECONDS=5 npm run bench -- --workers 2
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { throughput } from './lib/load.js';
import { freePort, has, median, start, stop, waitForPort, withChildren } from './lib/procs.js';
import { CLI, gatewayConfig, log, loginUsers, ROOT, startAux, url, work } from './lib/setup.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 64);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function nginxConf(dir: string, port: number, up: number, processes: number): string {
  const file = join(dir, `nginx-${processes}.conf`);
  writeFileSync(
    file,
    `worker_processes ${processes};
daemon off;
pid ${dir}/nginx-${processes}.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  upstream up { server 127.0.0.1:${up}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
`,
  );
  return file;
}

export async function scaling(max: number): Promise<void> {
  if (!Number.isInteger(max) || max < 1) throw new Error('--workers needs a number of workers (1 or more)');
  const cores = os.availableParallelism();
  log(`machine: ${cores} cores; server.workers 1..${max} against nginx with as many worker_processes`);
  const aux = await startAux();
  const withNginx = has('nginx');
  if (!withNginx) log('nginx is not installed: only the gateway is measured');
  const dir = join(work, 'nginx-workers');
  mkdirSync(dir, { recursive: true });
  const rows: string[] = [];
  let one = NaN;
  for (let n = 1; n <= max; n++) {
    // cores 0 … n-1 for the processes under test (all of them when n reaches the core count)
    const core = n >= cores ? undefined : n === 1 ? '0' : `0-${n - 1}`;
    const [gwPort, nginxPort] = await Promise.all([freePort(), freePort()]);
    const gw = start(process.execPath, [CLI, '--config', gatewayConfig(aux, gwPort, 100_000, { server: { host: '127.0.0.1', port: gwPort, workers: n } })], { core });
    const nginx = withNginx ? start('nginx', ['-c', nginxConf(dir, nginxPort, aux.up, n), '-p', dir], { core }) : undefined;
    await Promise.all([waitForPort(gwPort), ...(nginx ? [waitForPort(nginxPort)] : [])]);
    await sleep(1500); // every worker listening
    const token = (await loginUsers(gwPort, 1, `w${n}-`))[0]!;
    const threads = Math.min(n, 4);
    const gwRun = () => throughput({ url: url(gwPort, '/api/items'), connections: CONNECTIONS, seconds: SECONDS, headers: { Authorization: `Bearer ${token}` }, threads });
    const ngRun = () => throughput({ url: url(nginxPort, '/api/items'), connections: CONNECTIONS, seconds: SECONDS, threads });
    await gwRun();
    if (nginx) await ngRun();
    const g: number[] = [];
    const x: number[] = [];
    for (let r = 1; r <= ROUNDS; r++) {
      log(`workers ${n}: round ${r}/${ROUNDS}`);
      const a = await gwRun();
      if (a.errors) log(`workers ${n}: ${a.errors} errors`);
      g.push(a.rps);
      if (nginx) x.push((await ngRun()).rps);
    }
    const gm = median(g);
    const xm = nginx ? median(x) : NaN;
    if (n === 1) one = gm;
    const f = (v: number, d = 0) => (Number.isFinite(v) ? v.toFixed(d) : '-');
    rows.push(`| ${n} | ${core ?? `all ${cores}, shared with the load tool`} | ${f(gm)} | ${f(gm / one, 2)} × | ${f(gm / (n * one), 2)} | ${f(xm)} | ${f(gm / xm, 2)} |`);
    await stop(gw);
    if (nginx) {
      for (const pid of withChildren(nginx.pid).reverse()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
  }
  const report = [
    `| workers | cores (taskset) | wxgate auth, warm LRU req/s | ÷ 1 worker | ÷ (n × 1 worker) | nginx proxy_pass, as many worker_processes | wxgate ÷ nginx |`,
    `| ---: | --- | ---: | ---: | ---: | ---: | ---: |`,
    ...rows,
  ].join('\n');
  console.log(report);
  mkdirSync(join(ROOT, '.bench'), { recursive: true });
  writeFileSync(join(ROOT, '.bench', 'workers-last-run.md'), `${report}\n`);
}
