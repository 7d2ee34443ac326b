import type { Metrics } from '../metrics/metrics.js';
import type { ErrorCode } from '../base/errors.js';
import { CODE_LIFETIMES_MS, replayKey, type CodeFlow, seal, unseal, type LoginOutcome, type ReplayStore } from './replay.js';

interface Logger {
  warn(obj: object, msg: string): void;
}

/** What spending a code gave: a session token, or an error (final ones stay true for the code's whole life). */
export type Exchanged = { token: string } | { error: ErrorCode; final: boolean };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface OnceOptions {
  /** Whose code it is: how long it lives at WeChat, and so how long its answer is remembered (CODE_LIFETIMES_MS). */
  flow: CodeFlow;
  /**
   * Who spends the code (a web login: its OAuth state's nonce, bound to one browser). The remembered
   * session is handed again only to that holder; any other holder presenting the code gets `state_used`
   * and no session: a code that leaked (Referer, log, shared link) cannot be injected into another
   * browser's login. Without it (POST /login) anyone presenting the code gets the remembered answer.
   */
  holder?: string;
}

/**
 * One WeChat call per authorization code (a wx.login() code, or a web OAuth code), however often and
 * wherever it is presented within its life (5 or 10 minutes by flow, CODE_LIFETIMES_MS): concurrent callers in this process share one
 * promise; other replicas and later retries (a lost response, a repeated redirect, the back button) read
 * the remembered answer instead of meeting WeChat's 40163 "code been used". The answer is stored sealed
 * with the code (replay.ts): the store alone reveals nothing.
 */
export function createCodeOnce(deps: { replay: ReplayStore; metrics: Metrics; log: Logger; wechatTimeout: number }) {
  const { replay, metrics, log } = deps;
  const inflight = new Map<string, Promise<LoginOutcome>>();

  /** Spends the code (this replica has the right to) and remembers the answer. */
  async function spend(appid: string, code: string, key: string, exchange: () => Promise<Exchanged>, opts: OnceOptions): Promise<LoginOutcome> {
    const { holder } = opts;
    const lifetime = CODE_LIFETIMES_MS[opts.flow];
    let result: Exchanged;
    try {
      result = await exchange();
    } catch (err) {
      await replay.release(key).catch(() => {});
      throw err;
    }
    if ('error' in result) {
      // A final answer is remembered; after a timeout or an outage a retry may try WeChat again.
      if (result.final) await replay.fulfil(key, seal(appid, code, { error: result.error }), lifetime).catch(() => {});
      else await replay.release(key).catch(() => {});
      return { error: result.error };
    }
    const outcome: LoginOutcome = holder === undefined ? { token: result.token } : { token: result.token, holder };
    await replay.fulfil(key, seal(appid, code, outcome), lifetime).catch((err: Error) => {
      log.warn({ appid, err: err.message }, 'could not remember the code; a retry with it will fail');
    });
    return outcome;
  }

  async function resolve(appid: string, code: string, key: string, exchange: () => Promise<Exchanged>, opts: OnceOptions): Promise<LoginOutcome> {
    const lockMs = deps.wechatTimeout + 2000;
    const deadline = Date.now() + lockMs + 1000;
    for (;;) {
      const claim = await replay.claim(key, lockMs);
      if (claim === 'won') return spend(appid, code, key, exchange, opts);
      if (claim !== 'pending') return remembered(appid, code, claim);
      metrics.loginReplays.inc({ source: 'pending' });
      let value: string | undefined = 'pending';
      while (value === 'pending' && Date.now() < deadline) {
        await sleep(40);
        value = await replay.peek(key);
      }
      if (value === 'pending') return { error: 'wechat_timeout' };
      if (value !== undefined) return remembered(appid, code, value);
      // released after a passing failure elsewhere: try ourselves
    }
  }

  function remembered(appid: string, code: string, sealed: string): LoginOutcome {
    metrics.loginReplays.inc({ source: 'store' });
    return unseal(appid, code, sealed) ?? { error: 'code_used' };
  }

  /**
   * The outcome of `code` for `appid`: `exchange` runs at most once per code across replicas. The
   * claim in the store is atomic (SET NX in Redis), and the winner writes its holder into the answer it
   * remembers, so whichever replica a second holder reaches, and however close together they come,
   * only the first holder gets the token.
   */
  return async function once(appid: string, code: string, exchange: () => Promise<Exchanged>, opts: OnceOptions): Promise<LoginOutcome> {
    const key = replayKey(appid, code);
    let pending = inflight.get(key);
    if (pending) metrics.loginReplays.inc({ source: 'inflight' });
    else {
      pending = resolve(appid, code, key, exchange, opts).finally(() => inflight.delete(key));
      inflight.set(key, pending);
    }
    const outcome = await pending;
    if (!('token' in outcome)) return outcome;
    if (outcome.holder !== opts.holder) return { error: 'state_used' };
    return { token: outcome.token };
  };
}

export type CodeOnce = ReturnType<typeof createCodeOnce>;
