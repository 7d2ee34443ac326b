import http from 'node:http';
import https from 'node:https';
import type { Metrics } from '../metrics/metrics.js';
import { WechatError, type CodeSession } from './types.js';

export interface WechatClientOptions {
  /** e.g. https://api.weixin.qq.com (no trailing slash) */
  apiBase: string;
  /** whole-call deadline, ms */
  timeout: number;
  apps: ReadonlyArray<{ appid: string; secret: string }>;
  metrics?: Metrics;
}

const MAX_BODY = 64 * 1024;

/**
 * The only code that talks to WeChat. One method per API; each returns data or throws a WechatError
 * (errcode, timeout, network, bad_response). Error messages carry the API name, errcode and errmsg,
 * never the secret, the code or a session key. Nothing here retries: a login code may already be spent.
 */
export class WechatClient {
  private readonly base: URL;
  private readonly secrets: Map<string, string>;
  private readonly agent: http.Agent;
  private readonly transport: typeof http | typeof https;

  constructor(private readonly opts: WechatClientOptions) {
    this.base = new URL(opts.apiBase);
    this.secrets = new Map(opts.apps.map((a) => [a.appid, a.secret]));
    this.transport = this.base.protocol === 'https:' ? https : http;
    const agentOpts = { keepAlive: true, maxSockets: 64, maxFreeSockets: 16, timeout: 30_000 };
    this.agent = this.base.protocol === 'https:' ? new https.Agent(agentOpts) : new http.Agent(agentOpts);
  }

  /** `sns/jscode2session`: a wx.login() code → openid, session_key and maybe unionid. */
  async code2Session(appid: string, code: string): Promise<CodeSession> {
    const secret = this.secrets.get(appid);
    if (secret === undefined) throw new Error('unknown appid');
    const query = new URLSearchParams({ appid, secret, js_code: code, grant_type: 'authorization_code' });
    const data = await this.call('jscode2session', `/sns/jscode2session?${query}`, ['openid', 'session_key']);
    const { openid, session_key: sessionKey, unionid } = data as { openid: string; session_key: string; unionid?: unknown };
    return { openid, sessionKey, ...(typeof unionid === 'string' && unionid !== '' ? { unionid } : {}) };
  }

  private record(api: string, outcome: string, seconds?: number): void {
    this.opts.metrics?.wechatRequests.inc({ api, outcome });
    if (seconds !== undefined) this.opts.metrics?.wechatDuration.observe({ api }, seconds);
  }

  /** GET a WeChat API path; resolves with the JSON object when it has no errcode and every `required` string. */
  private call(api: string, pathAndQuery: string, required: string[]): Promise<Record<string, unknown>> {
    const started = process.hrtime.bigint();
    const basePath = this.base.pathname.replace(/\/+$/, '');
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      let settled = false;
      const finish = (outcome: string, err?: WechatError, data?: Record<string, unknown>) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.record(api, outcome, Number(process.hrtime.bigint() - started) / 1e9);
        if (err) reject(err);
        else resolve(data!);
      };
      const req = this.transport.request({
        protocol: this.base.protocol,
        hostname: this.base.hostname,
        port: this.base.port || undefined,
        path: basePath + pathAndQuery,
        method: 'GET',
        agent: this.agent,
        headers: { accept: 'application/json' },
      });
      const timer = setTimeout(() => {
        finish('timeout', new WechatError('timeout', api, undefined, `no answer within ${this.opts.timeout}ms`));
        req.destroy();
      }, this.opts.timeout);
      req.on('error', (err: NodeJS.ErrnoException) => {
        finish('network', new WechatError('network', api, undefined, err.code ?? 'request failed'));
      });
      req.on('response', (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          finish('bad_response', new WechatError('bad_response', api, undefined, `HTTP ${res.statusCode}`));
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_BODY) {
            finish('bad_response', new WechatError('bad_response', api, undefined, 'answer too large'));
            req.destroy();
            return;
          }
          chunks.push(c);
        });
        res.on('error', () => finish('network', new WechatError('network', api, undefined, 'answer cut off')));
        res.on('end', () => {
          let data: unknown;
          try {
            data = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            finish('bad_response', new WechatError('bad_response', api, undefined, 'answer is not JSON'));
            return;
          }
          if (!data || typeof data !== 'object' || Array.isArray(data)) {
            finish('bad_response', new WechatError('bad_response', api, undefined, 'answer is not a JSON object'));
            return;
          }
          const obj = data as Record<string, unknown>;
          const errcode = obj.errcode;
          if (errcode !== undefined && errcode !== 0) {
            const n = typeof errcode === 'number' ? errcode : Number(errcode);
            const errmsg = typeof obj.errmsg === 'string' ? obj.errmsg.slice(0, 200) : undefined;
            finish(`errcode_${Number.isFinite(n) ? n : 'unknown'}`, new WechatError('errcode', api, Number.isFinite(n) ? n : undefined, errmsg));
            return;
          }
          const missing = required.filter((k) => typeof obj[k] !== 'string' || obj[k] === '');
          if (missing.length) {
            finish('bad_response', new WechatError('bad_response', api, undefined, `no ${missing.join(', ')} in the answer`));
            return;
          }
          finish('ok', undefined, obj);
        });
      });
      req.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
