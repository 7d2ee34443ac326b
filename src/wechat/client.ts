import http from 'node:http';
import https from 'node:https';
import type { Metrics } from '../metrics/metrics.js';
import { WechatError, type CodeSession } from './types.js';

export interface WechatClientOptions {
  /** e.g. https://api.weixin.qq.com; a path prefix is kept, a trailing slash ignored. */
  apiBase: string;
  /** Whole-call deadline in ms: connect, answer and body. */
  timeout: number;
  apps: ReadonlyArray<{ appid: string; secret: string }>;
  metrics?: Metrics;
}

/** Largest answer read; WeChat's are a few hundred bytes. */
const MAX_BODY = 64 * 1024;
const MAX_SOCKETS = 64;

/**
 * The only code that talks to WeChat. One method per API; each returns data or throws a WechatError
 * (errcode, timeout, network, bad_response). Error messages carry the API name, errcode, errmsg and
 * error codes such as ECONNREFUSED, never the secret, the code, an access_token or a session key.
 * Nothing here retries: a login code may already be spent (access-token.ts retries stable_token).
 */
export class WechatClient {
  private readonly base: URL;
  private readonly basePath: string;
  private readonly secrets: Map<string, string>;
  private readonly agent: http.Agent;
  private readonly transport: typeof http | typeof https;

  constructor(private readonly opts: WechatClientOptions) {
    this.base = new URL(opts.apiBase);
    this.basePath = this.base.pathname.replace(/\/+$/, '');
    this.secrets = new Map(opts.apps.map((a) => [a.appid, a.secret]));
    const tls = this.base.protocol === 'https:';
    this.transport = tls ? https : http;
    // Keep-alive: /login must not pay a TCP + TLS handshake per call. Idle sockets close after 30s,
    // before WeChat's (and the simulator's) servers drop them, so a request never meets a closing socket.
    const agentOpts = { keepAlive: true, maxSockets: MAX_SOCKETS, maxFreeSockets: MAX_SOCKETS, timeout: 30_000 };
    this.agent = tls ? new https.Agent(agentOpts) : new http.Agent(agentOpts);
  }

  /** `sns/jscode2session`: a wx.login() code → openid, session_key and maybe unionid. Never retried. */
  async code2Session(appid: string, code: string): Promise<CodeSession> {
    const secret = this.secretOf(appid);
    const query = new URLSearchParams({ appid, secret, js_code: code, grant_type: 'authorization_code' });
    const data = await this.call('jscode2session', `/sns/jscode2session?${query}`, ['openid', 'session_key'], [secret, code]);
    const { openid, session_key: sessionKey, unionid } = data as { openid: string; session_key: string; unionid?: unknown };
    return { openid, sessionKey, ...(typeof unionid === 'string' && unionid !== '' ? { unionid } : {}) };
  }

  /**
   * `POST cgi-bin/stable_token`: the app's access_token. With forceRefresh false WeChat answers the
   * current token while it has more than 5 minutes left (idempotent, so callers may retry it).
   */
  async stableToken(appid: string, forceRefresh = false): Promise<AccessTokenAnswer> {
    const secret = this.secretOf(appid);
    const body = { grant_type: 'client_credential', appid, secret, force_refresh: forceRefresh };
    return tokenAnswer(await this.call('stable_token', '/cgi-bin/stable_token', ['access_token'], [secret], body), 'stable_token');
  }

  /** `GET cgi-bin/token`: a new access_token at every call (the previous one stays valid for 5 minutes). Never retried. */
  async token(appid: string): Promise<AccessTokenAnswer> {
    const secret = this.secretOf(appid);
    const query = new URLSearchParams({ grant_type: 'client_credential', appid, secret });
    return tokenAnswer(await this.call('token', `/cgi-bin/token?${query}`, ['access_token'], [secret]), 'token');
  }

  /**
   * `POST wxa/business/getuserphonenumber`: a getPhoneNumber button's code → the user's phone number.
   * With `openid`, WeChat checks that the code was made for that user. Never retried (the code is single-use).
   */
  async getPhoneNumber(accessToken: string, code: string, openid?: string): Promise<PhoneNumber> {
    const query = new URLSearchParams({ access_token: accessToken });
    const data = await this.call('getuserphonenumber', `/wxa/business/getuserphonenumber?${query}`, [], [accessToken, code], {
      code,
      ...(openid ? { openid } : {}),
    });
    const info = data.phone_info as Record<string, unknown> | undefined;
    const str = (v: unknown) => (typeof v === 'string' ? v : typeof v === 'number' && Number.isFinite(v) ? String(v) : undefined);
    const phoneNumber = str(info?.phoneNumber);
    const purePhoneNumber = str(info?.purePhoneNumber);
    const countryCode = str(info?.countryCode);
    if (!info || typeof info !== 'object' || !phoneNumber || !purePhoneNumber || !countryCode) {
      throw new WechatError('bad_response', 'getuserphonenumber', undefined, 'no phone_info in the answer');
    }
    return { phoneNumber, purePhoneNumber, countryCode };
  }

  close(): void {
    this.agent.destroy();
  }

  private secretOf(appid: string): string {
    const secret = this.secrets.get(appid);
    if (secret === undefined) throw new Error('unknown appid');
    return secret;
  }

  /**
   * GET a WeChat API path (or POST `json` to it); resolves with the JSON object when it has no (or a
   * zero) errcode and every `required` key as a non-empty string. `hidden` values are cut out of
   * WeChat's errmsg, should it ever echo them.
   */
  private call(api: string, pathAndQuery: string, required: string[], hidden: string[], json?: object): Promise<Record<string, unknown>> {
    const payload = json === undefined ? undefined : Buffer.from(JSON.stringify(json));
    const started = process.hrtime.bigint();
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      let settled = false;
      const fail = (kind: 'timeout' | 'network' | 'bad_response', detail: string) =>
        finish(kind, new WechatError(kind, api, undefined, detail));
      const finish = (outcome: string, err?: WechatError, data?: Record<string, unknown>) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.opts.metrics?.wechatRequests.inc({ api, outcome });
        this.opts.metrics?.wechatDuration.observe({ api }, Number(process.hrtime.bigint() - started) / 1e9);
        if (err) reject(err);
        else resolve(data!);
      };

      const req = this.transport.request({
        protocol: this.base.protocol,
        hostname: this.base.hostname,
        port: this.base.port || undefined,
        path: this.basePath + pathAndQuery,
        method: payload ? 'POST' : 'GET',
        agent: this.agent,
        headers: payload
          ? { accept: 'application/json', 'content-type': 'application/json', 'content-length': payload.length }
          : { accept: 'application/json' },
      });
      const timer = setTimeout(() => {
        fail('timeout', `no answer within ${this.opts.timeout}ms`);
        req.destroy();
      }, this.opts.timeout);
      // Only the error code (ECONNREFUSED, ENOTFOUND, ...): Node's messages may name the request.
      req.on('error', (err: NodeJS.ErrnoException) => fail('network', err.code ?? 'request failed'));

      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        if (status < 200 || status > 299) {
          res.resume();
          return fail('bad_response', `HTTP ${status}`);
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_BODY) {
            fail('bad_response', `answer larger than ${MAX_BODY} bytes`);
            req.destroy();
          } else chunks.push(c);
        });
        res.on('error', (err: NodeJS.ErrnoException) => fail('network', err.code ?? 'answer cut off'));
        res.on('end', () => {
          let data: unknown;
          try {
            data = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            return fail('bad_response', 'answer is not JSON');
          }
          if (!data || typeof data !== 'object' || Array.isArray(data)) return fail('bad_response', 'answer is not a JSON object');
          const obj = data as Record<string, unknown>;
          if (obj.errcode !== undefined && obj.errcode !== 0 && obj.errcode !== '0') {
            const errcode = Number(obj.errcode);
            if (!Number.isInteger(errcode)) return fail('bad_response', 'errcode is not a number');
            const errmsg = typeof obj.errmsg === 'string' ? redact(obj.errmsg, hidden).slice(0, 200) : undefined;
            return finish(`errcode_${errcode}`, new WechatError('errcode', api, errcode, errmsg));
          }
          const missing = required.filter((k) => typeof obj[k] !== 'string' || obj[k] === '');
          if (missing.length) return fail('bad_response', `no ${missing.join(', ')} in the answer`);
          finish('ok', undefined, obj);
        });
      });
      req.end(payload);
    });
  }
}

/** An access_token as WeChat gave it: the token and its lifetime in seconds. */
export interface AccessTokenAnswer {
  accessToken: string;
  expiresIn: number;
}

export interface PhoneNumber {
  phoneNumber: string;
  purePhoneNumber: string;
  countryCode: string;
}

function tokenAnswer(data: Record<string, unknown>, api: string): AccessTokenAnswer {
  const expiresIn = Number(data.expires_in);
  if (!Number.isFinite(expiresIn) || expiresIn <= 0) throw new WechatError('bad_response', api, undefined, 'no expires_in in the answer');
  return { accessToken: data.access_token as string, expiresIn };
}

/** WeChat's errmsg without any of the given values (the secret, the code); values under 4 characters are no secret. */
function redact(text: string, hidden: string[]): string {
  for (const h of hidden) if (h.length >= 4) text = text.split(h).join('***');
  return text;
}
