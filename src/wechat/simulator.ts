import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A WeChat API simulator for development and tests (never for production). It answers like WeChat:
 * HTTP 200 with JSON, errors as `{ errcode, errmsg }`.
 *
 * `sns/jscode2session` is deterministic. The user is the part of the code before the first "."
 * (`alice.1` and `alice.2` are two logins of alice); codes are single-use (40163 the second time),
 * as at WeChat. Users whose name starts with "union" also get a unionid (the same in every app).
 * Codes that ask for trouble:
 *   fail-<errcode>      that errcode (fail-40029, fail-45011, fail-40226, fail--1, ...)
 *   slow-<ms>[.x]       answers normally after <ms>
 *   html                a 502 HTML error page
 *   garbage             200 with a body that is not JSON
 *   nojson-openid       200 JSON without openid
 */
export interface SimulatorOptions {
  /** appid → secret. When given, other appids get 40013 and wrong secrets 40125. */
  apps?: Record<string, string>;
  /** added to every answer, ms */
  latencyMs?: number;
}

const ERRMSG: Record<number, string> = {
  [-1]: 'system error',
  40029: 'invalid code',
  40163: 'code been used',
  45011: 'api minute-quota reach limit  mustslower  retry next minute',
  40226: 'invalid user, high-risk user',
  40013: 'invalid appid',
  40125: 'invalid appsecret',
  41002: 'appid missing',
  41004: 'appsecret missing',
  41008: 'missing code',
};

const USED_CODE_LIFE = 5 * 60 * 1000;
const USED_CODES_MAX = 100_000;

function derive(...parts: string[]): Buffer {
  return createHash('sha256').update(parts.join('\u0000')).digest();
}

/** A WeChat-like id: "o" and 27 base64url characters. */
function wxId(...parts: string[]): string {
  return `o${derive(...parts).toString('base64url').slice(0, 27)}`;
}

export function simulatedOpenid(appid: string, user: string): string {
  return wxId('openid', appid, user);
}

export function createSimulator(opts: SimulatorOptions = {}): http.Server {
  const used = new Map<string, number>(); // appid:code → when
  let rid = 0;

  function json(res: http.ServerResponse, body: object): void {
    const text = JSON.stringify(body);
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }
  function error(res: http.ServerResponse, errcode: number): void {
    json(res, { errcode, errmsg: `${ERRMSG[errcode] ?? 'simulated error'}, rid: sim-${(++rid).toString(16)}` });
  }

  function jscode2session(q: URLSearchParams, res: http.ServerResponse): void {
    const appid = q.get('appid');
    const secret = q.get('secret');
    const code = q.get('js_code');
    if (!appid) return error(res, 41002);
    if (!secret) return error(res, 41004);
    if (!code) return error(res, 41008);
    if (opts.apps) {
      if (!(appid in opts.apps)) return error(res, 40013);
      if (opts.apps[appid] !== secret) return error(res, 40125);
    }
    const fail = /^fail-(-?\d+)/.exec(code);
    if (fail) return error(res, Number(fail[1]));
    if (code === 'html') {
      res.writeHead(502, { 'content-type': 'text/html' });
      res.end('<html><body><h1>502 Bad Gateway</h1></body></html>');
      return;
    }
    if (code === 'garbage') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('{"openid": "o-broken');
      return;
    }
    if (code === 'nojson-openid') return json(res, {});

    const now = Date.now();
    const key = `${appid}:${code}`;
    const seen = used.get(key);
    if (seen !== undefined && now - seen < USED_CODE_LIFE) return error(res, 40163);
    used.set(key, now);
    if (used.size > USED_CODES_MAX) used.delete(used.keys().next().value!);

    const user = code.split('.')[0]!;
    json(res, {
      openid: simulatedOpenid(appid, user),
      session_key: derive('session_key', appid, code).subarray(0, 16).toString('base64'),
      ...(user.startsWith('union') ? { unionid: wxId('unionid', user) } : {}),
    });
  }

  return http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://simulator');
    const answer = () => {
      if (req.method === 'GET' && url.pathname === '/sns/jscode2session') return jscode2session(url.searchParams, res);
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errcode: -1, errmsg: `the simulator does not know ${url.pathname}` }));
    };
    const slow = /^slow-(\d+)/.exec(url.searchParams.get('js_code') ?? '');
    const delay = (opts.latencyMs ?? 0) + (slow ? Number(slow[1]) : 0);
    if (delay > 0) {
      const t = setTimeout(answer, delay);
      res.on('close', () => clearTimeout(t));
    } else answer();
  });
}

export async function startSimulator(
  port: number,
  host = '127.0.0.1',
  opts: SimulatorOptions = {},
): Promise<{ server: http.Server; url: string; close(): Promise<void> }> {
  const server = createSimulator(opts);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const { port: actual } = server.address() as AddressInfo;
  return {
    server,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${actual}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
