import { Agent } from 'undici';
import type { Metrics } from '../metrics/metrics.js';
import { WechatError } from './types.js';

/**
 * One HTTP exchange with WeChat's API (fetch on an undici Agent: keep-alive, a whole-call deadline, a
 * body limit), its metrics, and the answer checked: JSON without an errcode, or an image. Errors are
 * WechatErrors whose messages never carry the secret, a code or a token (`hidden`).
 */

export interface TransportOptions {
  /** e.g. https://api.weixin.qq.com; a path prefix is kept, a trailing slash ignored. */
  apiBase: string;
  /** Whole-call deadline in ms: connect, answer and body. */
  timeout: number;
  metrics?: Metrics;
}

/** An image as WeChat answered it. */
export interface WxacodeImage {
  /** e.g. "image/jpeg" or "image/png", without parameters */
  contentType: string;
  body: Buffer;
}

/** Largest JSON answer read; WeChat's are a few hundred bytes. */
const MAX_BODY = 64 * 1024;
/** Largest image answer read (wxacode images are some 10 to 300 KB). */
const MAX_IMAGE = 2 * 1024 * 1024;
const MAX_SOCKETS = 64;

type Answer = { data?: Record<string, unknown>; image?: WxacodeImage };

export class WechatTransport {
  private readonly base: string;
  private readonly agent: Agent;

  constructor(private readonly opts: TransportOptions) {
    const base = new URL(opts.apiBase);
    this.base = base.origin + base.pathname.replace(/\/+$/, '');
    // Keep-alive: /login must not pay a TCP + TLS handshake per call. Idle sockets close after 30 s at the
    // most, or earlier when the server says so (Keep-Alive: timeout=…), so a request never meets a closing socket.
    this.agent = new Agent({ connections: MAX_SOCKETS, keepAliveTimeout: 30_000, keepAliveMaxTimeout: 30_000, connectTimeout: opts.timeout });
  }

  /**
   * GET a WeChat API path (or POST `json` to it); with `acceptImage` an answer whose content type is
   * image/* is read (up to MAX_IMAGE bytes, checked to be a PNG, JPEG or GIF) and resolved as `image`.
   * Otherwise resolves with the JSON object when it has no (or a zero) errcode and every `required` key
   * as a non-empty string. `hidden` values are cut out of WeChat's errmsg, should it ever echo them.
   */
  async exchange(api: string, pathAndQuery: string, required: string[], hidden: string[], json?: object, acceptImage = false): Promise<Answer> {
    const started = process.hrtime.bigint();
    let outcome = 'ok';
    try {
      return await this.fetchAnswer(api, pathAndQuery, required, hidden, json, acceptImage);
    } catch (err) {
      outcome = !(err instanceof WechatError) ? 'network' : err.kind === 'errcode' ? `errcode_${err.errcode}` : err.kind;
      throw err;
    } finally {
      this.opts.metrics?.wechatRequests.inc({ api, outcome });
      this.opts.metrics?.wechatDuration.observe({ api }, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  /** Closes the kept-alive connections; calls after it fail (network). */
  close(): void {
    this.agent.destroy().catch(() => {});
  }

  private async fetchAnswer(api: string, pathAndQuery: string, required: string[], hidden: string[], json: object | undefined, acceptImage: boolean): Promise<Answer> {
    const fail = (kind: 'timeout' | 'network' | 'bad_response', detail: string) => new WechatError(kind, api, undefined, detail);
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), this.opts.timeout);
    const accept = acceptImage ? 'image/*, application/json' : 'application/json';
    try {
      let res: Response;
      try {
        res = await fetch(this.base + pathAndQuery, {
          method: json === undefined ? 'GET' : 'POST',
          headers: json === undefined ? { accept } : { accept, 'content-type': 'application/json' },
          body: json === undefined ? undefined : JSON.stringify(json),
          signal: deadline.signal,
          redirect: 'manual',
          // node's fetch is undici: it takes an undici Agent (nock, in the tests, answers before it is used)
          dispatcher: this.agent,
        } as RequestInit);
      } catch (err) {
        throw deadline.signal.aborted ? fail('timeout', `no answer within ${this.opts.timeout}ms`) : fail('network', errorCode(err) ?? 'request failed');
      }
      if (res.status < 200 || res.status > 299) {
        void res.body?.cancel().catch(() => {});
        throw fail('bad_response', `HTTP ${res.status}`);
      }
      const contentType = (res.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
      const isImage = acceptImage && contentType.startsWith('image/');
      const limit = isImage ? MAX_IMAGE : MAX_BODY;
      let body: Buffer;
      try {
        body = await readAtMost(res, limit);
      } catch (err) {
        if (err instanceof WechatError) throw err;
        throw deadline.signal.aborted ? fail('timeout', `no answer within ${this.opts.timeout}ms`) : fail('network', errorCode(err) ?? 'answer cut off');
      }
      // undici frees the connection a turn of the event loop after the body ends: a call made before that
      // (the next of sequential calls) would open a second connection, so the answer waits for it
      await new Promise((resolve) => setImmediate(resolve));
      if (body.length > limit) throw fail('bad_response', `answer larger than ${limit} bytes`);
      if (isImage) {
        if (!looksLikeImage(body)) throw fail('bad_response', `${contentType} answer is not a PNG, JPEG or GIF`);
        return { image: { contentType, body } };
      }
      return { data: checkJson(api, body, required, hidden) };
    } finally {
      clearTimeout(timer);
    }
  }
}

/** The body, read until it passes `limit` bytes (then cut: the caller sees a longer buffer and refuses it). */
async function readAtMost(res: Response, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  if (!res.body) return Buffer.alloc(0);
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    chunks.push(Buffer.from(value));
    if (size > limit) {
      void reader.cancel().catch(() => {});
      break;
    }
  }
  return Buffer.concat(chunks);
}

/** The answer as a JSON object without an errcode and with every `required` key, else the WechatError. */
function checkJson(api: string, body: Buffer, required: string[], hidden: string[]): Record<string, unknown> {
  let data: unknown;
  try {
    data = JSON.parse(body.toString('utf8'));
  } catch {
    throw new WechatError('bad_response', api, undefined, 'answer is not JSON');
  }
  if (!data || typeof data !== 'object' || Array.isArray(data)) throw new WechatError('bad_response', api, undefined, 'answer is not a JSON object');
  const obj = data as Record<string, unknown>;
  if (obj.errcode !== undefined && obj.errcode !== 0 && obj.errcode !== '0') {
    const errcode = Number(obj.errcode);
    if (!Number.isInteger(errcode)) throw new WechatError('bad_response', api, undefined, 'errcode is not a number');
    const errmsg = typeof obj.errmsg === 'string' ? redact(obj.errmsg, hidden).slice(0, 200) : undefined;
    throw new WechatError('errcode', api, errcode, errmsg);
  }
  const missing = required.filter((k) => typeof obj[k] !== 'string' || obj[k] === '');
  if (missing.length) throw new WechatError('bad_response', api, undefined, `no ${missing.join(', ')} in the answer`);
  return obj;
}

/**
 * Only the error code (ECONNREFUSED, ENOTFOUND, UND_ERR_SOCKET ...) of a failed fetch, found on the error
 * or its causes: the messages may name the request, and with it the secret or a code.
 */
function errorCode(err: unknown): string | undefined {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string') return e.code;
  }
  return undefined;
}

/** WeChat's errmsg without any of the given values (the secret, the code); values under 4 characters are no secret. */
function redact(text: string, hidden: string[]): string {
  for (const h of hidden) if (h.length >= 4) text = text.split(h).join('***');
  return text;
}

/** PNG, JPEG or GIF magic bytes. */
function looksLikeImage(b: Buffer): boolean {
  if (b.length >= 8 && b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return true;
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return true;
  return b.length >= 6 && (b.subarray(0, 6).toString('latin1') === 'GIF87a' || b.subarray(0, 6).toString('latin1') === 'GIF89a');
}
