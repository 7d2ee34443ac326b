import type http from 'node:http';
import { encryptUserData } from '../wechat/userdata.js';

/**
 * The simulator's `POST /dev/encrypt` (dev only, like the whole simulator): WeChat open data made with a
 * simulated user's session_key, so that /wx/decrypt and /login's encryptedData can be exercised offline.
 *
 *   { "appid": "wx…", "user": "alice" | "openid": "o…" | "code": "alice.2", "data": { … }, "timestamp"?: n }
 *   → 200 { encryptedData, iv, rawData, signature }
 *
 * `user` or `openid`: the key of that user's latest login at this simulator (404 before any login);
 * `code`: the key of the login with that code (deterministic, whether or not the code was used yet).
 * `data` gets `watermark: { appid, timestamp }` in the ciphertext; `rawData` is `data` as JSON, without it.
 */
export interface DevEncryptDeps {
  /** the simulator's apps, when it checks them */
  apps?: Record<string, string>;
  /** "appid:openid" → the session_key of the latest login */
  latestKeys: ReadonlyMap<string, string>;
  sessionKeyOf(appid: string, code: string): string;
  openidOf(appid: string, user: string): string;
}

const BODY_LIMIT = 64 * 1024;

function answer(res: http.ServerResponse, status: number, body: object): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

const fail = (res: http.ServerResponse, status: number, message: string) =>
  answer(res, status, { error: status === 404 ? 'not_found' : 'invalid_request', message });

export function devEncrypt(req: http.IncomingMessage, res: http.ServerResponse, deps: DevEncryptDeps): void {
  const chunks: Buffer[] = [];
  let size = 0;
  let over = false;
  req.on('data', (c: Buffer) => {
    size += c.length;
    if (size > BODY_LIMIT) over = true;
    else chunks.push(c);
  });
  req.on('error', () => res.destroy());
  req.on('end', () => {
    if (over) return fail(res, 413, `The body is larger than ${BODY_LIMIT} bytes.`);
    let body: Record<string, unknown>;
    try {
      const value: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      if (!value || typeof value !== 'object' || Array.isArray(value)) throw new Error('not an object');
      body = value as Record<string, unknown>;
    } catch {
      return fail(res, 400, 'The body must be a JSON object.');
    }
    const { appid, user, openid, code, data, timestamp } = body;
    if (typeof appid !== 'string' || appid === '') return fail(res, 400, '"appid" is required.');
    if (deps.apps && !Object.hasOwn(deps.apps, appid)) return fail(res, 400, `"${appid}" is not an app of this simulator.`);
    if (!data || typeof data !== 'object' || Array.isArray(data)) return fail(res, 400, '"data" must be a JSON object.');
    if (timestamp !== undefined && (typeof timestamp !== 'number' || !Number.isInteger(timestamp))) return fail(res, 400, '"timestamp" must be an integer.');
    const given = [user, openid, code].filter((v) => v !== undefined);
    if (given.length !== 1 || typeof given[0] !== 'string' || given[0] === '') {
      return fail(res, 400, 'Exactly one of "user", "openid" or "code" (a string) says whose session_key to use.');
    }
    let sessionKey: string | undefined;
    if (typeof code === 'string') sessionKey = deps.sessionKeyOf(appid, code);
    else {
      const who = typeof openid === 'string' ? openid : deps.openidOf(appid, user as string);
      sessionKey = deps.latestKeys.get(`${appid}:${who}`);
      if (!sessionKey) return fail(res, 404, 'This user has not logged in at this simulator yet.');
    }
    answer(res, 200, encryptUserData(sessionKey, appid, data as Record<string, unknown>, { timestamp: timestamp as number | undefined }));
  });
}
