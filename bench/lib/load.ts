import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AUX_CORE, HAS_TASKSET, has } from './procs.js';

export interface LoadResult {
  rps: number;
  /** ms */
  p50: number;
  p99: number;
  errors: number;
}

/** wrk when installed (BENCH_TOOL=autocannon forces autocannon, as on a machine without wrk) */
export const HAS_WRK = process.env.BENCH_TOOL !== 'autocannon' && has('wrk');
const here = fileURLToPath(new URL('.', import.meta.url));
const scripts = mkdtempSync(join(tmpdir(), 'wxgate-bench-'));

function run(cmd: string, args: string[]): Promise<string> {
  const [file, argv] = HAS_TASKSET ? ['taskset', ['-c', AUX_CORE, cmd, ...args]] : [cmd, args];
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited ${code}: ${out}`))));
  });
}

function ms(v: string, unit: string): number {
  return Number(v) * (unit === 'us' ? 0.001 : unit === 's' ? 1000 : unit === 'm' ? 60_000 : 1);
}

function wrkLua(kind: 'tokens' | 'login', tokensFile?: string): string {
  const file = join(scripts, `${kind}.lua`);
  const lua =
    kind === 'tokens'
      ? `local tokens = {}
for line in io.lines("${tokensFile}") do tokens[#tokens + 1] = line end
request = function()
  return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. tokens[math.random(#tokens)] })
end`
      : `local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, '{"code":"w' .. n .. '.' .. math.random(1000000000) .. '"}')
end`;
  writeFileSync(file, lua);
  return file;
}

/** Closed-loop throughput at fixed concurrency (wrk when installed, else autocannon). */
export async function throughput(o: {
  url: string;
  connections: number;
  seconds: number;
  headers?: Record<string, string>;
  tokensFile?: string;
  login?: boolean;
  /** wrk threads (default 1) */
  threads?: number;
}): Promise<LoadResult> {
  if (HAS_WRK) {
    const args = [`-t${o.threads ?? 1}`, `-c${o.connections}`, `-d${o.seconds}s`, '--latency', '--timeout', '5s'];
    for (const [k, v] of Object.entries(o.headers ?? {})) args.push('-H', `${k}: ${v}`);
    if (o.tokensFile) args.push('-s', wrkLua('tokens', o.tokensFile));
    if (o.login) args.push('-s', wrkLua('login'));
    const out = await run('wrk', [...args, o.url]);
    const pct = (p: string) => {
      const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(out);
      return m ? ms(m[1]!, m[2]!) : NaN;
    };
    const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
    const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
    const sockErr = sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
    return { rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN), p50: pct('50'), p99: pct('99'), errors: non2xx + sockErr };
  }
  const out = await run(process.execPath, ['--import', 'tsx', join(here, 'cannon.ts'), JSON.stringify(o)]);
  return JSON.parse(out) as LoadResult;
}

/** Open-loop latency at a fixed request rate. */
export async function atRate(o: { url: string; rate: number; seconds: number; headers?: Record<string, string> }): Promise<LoadResult & { achieved: number }> {
  const out = await run(process.execPath, ['--import', 'tsx', join(here, 'rate-client.ts'), JSON.stringify(o)]);
  const r = JSON.parse(out) as { achieved: number; p50: number; p99: number; errors: number };
  return { rps: r.achieved, achieved: r.achieved, p50: r.p50, p99: r.p99, errors: r.errors };
}
