import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { buildConfig } from '../../src/config/load.js';
import { startGateway, type Gateway } from '../../src/main.js';
import { createLogger } from '../../src/base/logger.js';
import { configSecrets, reportLeaks } from './log-leaks.js';

export const APPID = 'wx0123456789abcdef';
export const SECRET = 'test-secret-0123456789';
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * A configuration object for tests: one app, the given routes, fast timeouts. The login rate limit is
 * off (every test client is 127.0.0.1); test/security/login-rate-limit.test.ts turns it on with `limits`.
 */
export function testConfig(opts: { apiBase: string; routes?: object[]; session?: object; [key: string]: unknown }): Record<string, unknown> {
  const { apiBase, routes, session, ...rest } = opts;
  return {
    server: { host: '127.0.0.1', port: 0 },
    wechat: { apiBase, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] },
    session: session ?? { store: 'memory' },
    routes: routes ?? [],
    log: { level: 'debug' },
    limits: { login: { perIp: 0 } },
    ...rest,
  };
}

export interface TestGateway extends Gateway {
  /** Every log line so far, as written (JSON). */
  logs: string[];
}

/** The gateway in this process, on port 0, its log captured (at `logLevel`, default debug). */
export async function startTestGateway(raw: Record<string, unknown>, opts: { logLevel?: string } = {}): Promise<TestGateway> {
  const config = buildConfig(raw, 'test');
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  const log = createLogger(opts.logLevel ?? 'debug', sink);
  const gw = await startGateway(config, { log });
  // every log a test gateway wrote is checked for credentials and phone numbers when it closes
  // (test/helpers/log-leaks.ts): a leak anywhere in the suite fails the test file that caused it
  const close = gw.close.bind(gw);
  const secrets = [SECRET, ...configSecrets(raw)];
  gw.close = async (...args: Parameters<typeof close>) => {
    await close(...args);
    reportLeaks(logs, secrets, 'a test gateway');
  };
  return Object.assign(gw, { logs });
}

export interface GatewayProcess {
  url: string;
  /** the config file it runs on (tests may rewrite it) */
  file: string;
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
  /** SIGTERM and wait for the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Writes a config file and runs the built CLI (`node dist/cli.js --config FILE`) as its own process. */
export function writeConfig(raw: Record<string, unknown> | string): string {
  const dir = mkdtempSync(join(tmpdir(), 'wxgate-test-'));
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, typeof raw === 'string' ? raw : stringify(raw));
  return file;
}

/**
 * The child's exit code and signal, once it has exited and what it wrote has been read. 'exit' can come
 * before the last chunks of stdout and stderr (a CI run saw a check command's whole output missing);
 * 'close' waits for both but never comes while a grandchild (a cluster worker) still holds them, so the
 * wait for the streams is bounded. Only streams being read are waited for.
 */
export async function exited(child: ChildProcess, grace = 5000): Promise<[number | null, NodeJS.Signals | null]> {
  const [code, signal] =
    child.exitCode !== null || child.signalCode !== null
      ? [child.exitCode, child.signalCode]
      : ((await once(child, 'exit')) as [number | null, NodeJS.Signals | null]);
  const reading = [child.stdout, child.stderr].filter((s) => s && s.readableFlowing && !s.readableEnded && !s.destroyed);
  if (reading.length > 0) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(reading.map((s) => once(s!, 'close').catch(() => undefined))),
      new Promise((r) => (timer = setTimeout(r, grace))),
    ]);
    clearTimeout(timer);
  }
  return [code, signal];
}

/** `nodeArgs`: options for node itself, before the script (V8 tracing flags, say). */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = []): ChildProcess {
  return spawn(process.execPath, [...nodeArgs, join(ROOT, 'dist/cli.js'), ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

export async function spawnGateway(raw: Record<string, unknown> | string, env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = []): Promise<GatewayProcess> {
  const file = writeConfig(raw);
  const child = runCli(['--config', file], env, nodeArgs);
  const stdout: string[] = [];
  const stderr: string[] = [];
  const done = exited(child).then(([code]) => code);
  child.stderr!.on('data', (d: Buffer) => stderr.push(d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`gateway did not start: ${stderr.join('')}`)), 15_000);
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        stdout.push(line);
        try {
          const rec = JSON.parse(line) as { msg?: string; url?: string };
          if (rec.msg === 'wxgate listening' && rec.url) {
            clearTimeout(timer);
            resolve(rec.url);
          }
        } catch {
          /* not JSON */
        }
      }
    });
    void done.then((code) => reject(new Error(`gateway exited with ${code}: ${stderr.join('')}`)));
  });
  return {
    url,
    file,
    child,
    stdout,
    stderr,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null) child.kill(signal);
      const code = await done;
      // the process's whole log, checked as startTestGateway's are (test/helpers/log-leaks.ts)
      reportLeaks([...stdout, ...stderr.join('').split('\n')], [SECRET, ...configSecrets(raw)], 'a gateway process');
      return code;
    },
  };
}

/** Logs in through the gateway and returns the token. */
export async function login(url: string, code: string, extra: Record<string, unknown> = {}): Promise<string> {
  const res = await fetch(`${url}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ code, ...extra }),
  });
  const body = (await res.json()) as { token?: string };
  if (res.status !== 200 || !body.token) throw new Error(`login failed: ${res.status} ${JSON.stringify(body)}`);
  return body.token;
}
