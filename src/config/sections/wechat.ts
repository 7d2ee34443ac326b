import { z } from 'zod';
import { list, obj, withCheck, type Report } from '../checks.js';
import { appid, duration, httpUrl, secret } from '../values.js';

export const DEFAULT_API_BASE = 'https://api.weixin.qq.com';
/** Where WeChat's browser pages live (connect/oauth2/authorize, connect/qrconnect). */
export const DEFAULT_OAUTH_BASE = 'https://open.weixin.qq.com';
/** Where WeChat shows an Official Account QR code by its ticket (cgi-bin/showqrcode). */
export const DEFAULT_MP_BASE = 'https://mp.weixin.qq.com';

const app = z.strictObject({
  appid,
  secret: secret(),
  name: z.string().optional(),
  /** Where this app's access_token comes from (see access-token.ts). */
  tokenSource: z.enum(['stable_token', 'token', 'external'], { error: 'must be "stable_token", "token" or "external"' }).default('stable_token'),
  /** tokenSource external: the Redis key or the URL another system keeps the token at. */
  externalToken: z
    .strictObject({ redisKey: z.string().min(1).optional(), url: httpUrl.optional() })
    .refine((e) => (e.redisKey === undefined) !== (e.url === undefined), { error: 'needs exactly one of redisKey and url' })
    .optional(),
});

/** wechat: WeChat's API and the mini-programs whose users log in. */
export const wechat = z.strictObject({
  apiBase: httpUrl.optional(),
  /** WeChat's browser pages for web logins (default https://open.weixin.qq.com; the simulator with dev.simulator). */
  oauthBase: httpUrl.optional(),
  /** Where Official Account QR codes are shown (showqrcode; default https://mp.weixin.qq.com; the simulator with dev.simulator). */
  mpBase: httpUrl.optional(),
  timeout: duration().prefault('3s'),
  apps: withCheck(z.array(app).min(1, { error: 'must list at least one mini-program app' }), checkApps),
});

/** Each appid once; externalToken exactly with tokenSource external. */
function checkApps(apps: unknown, report: Report): void {
  const seen = new Map<string, number>();
  list(apps).forEach((raw, i) => {
    const a = obj(raw);
    if (typeof a.appid === 'string') {
      const prev = seen.get(a.appid);
      if (prev !== undefined) report([i, 'appid'], `"${a.appid}" is already listed at wechat.apps[${prev}]`);
      else seen.set(a.appid, i);
    }
    if (a.tokenSource === 'external' && a.externalToken === undefined) {
      report([i, 'externalToken'], 'is required with tokenSource: external ({ redisKey } or { url })');
    }
    if (a.externalToken !== undefined && a.tokenSource !== 'external') report([i, 'externalToken'], 'needs tokenSource: external');
  });
}

/** The appids of wechat.apps (of a value parsed so far), with their index. */
export function appIndex(wechatValue: unknown): Map<string, number> {
  const out = new Map<string, number>();
  list(obj(wechatValue).apps).forEach((a, i) => {
    const id = obj(a).appid;
    if (typeof id === 'string' && !out.has(id)) out.set(id, i);
  });
  return out;
}
