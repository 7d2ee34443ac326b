import { z } from 'zod';
import { obj, withCheck } from '../checks.js';
import { appid, duration, endpointPath, origin, secret } from '../values.js';

/** A redirect target after a web login: a local path prefix ("/", "/shop") or an origin. */
const redirectRule = z.union([z.string().regex(/^\/[A-Za-z0-9._~\-/]*$/), origin], {
  error: 'must be a path such as "/shop" or an origin such as "https://shop.example.com"',
});

/** A web app's credentials (Official Account or Open Platform website app). */
const webApp = { appid, secret: secret() };

/** WeChat checks the page only against the released version: 41030 for every QR of trial/develop. */
const scan = withCheck(
  z.strictObject({
    /** The mini-program whose users confirm (default: the first of wechat.apps). */
    app: appid.optional(),
    /** The mini-program page the QR code opens, without a leading "/". */
    page: z.string().regex(/^[A-Za-z0-9_\-]+(\/[A-Za-z0-9_\-.]+)*$/, { error: 'must be a page path such as "pages/scan/index" (no leading "/")' }).default('pages/scan/index'),
    envVersion: z.enum(['release', 'trial', 'develop'], { error: 'must be "release", "trial" or "develop"' }).default('release'),
    /** WeChat checks that the page exists in the published version (false for pages not yet released; must be false with envVersion trial/develop). */
    checkPath: z.boolean().default(true),
    /** How long a ticket may wait for its scan and confirmation. */
    ticketTtl: duration(1000).prefault('2m'),
    /** Serve a demo PC page at /scan/demo that shows the QR code and logs in. */
    demo: z.boolean().default(false),
  }),
  (value, report) => {
    const s = obj(value);
    if ((s.envVersion === 'trial' || s.envVersion === 'develop') && s.checkPath !== false) {
      report(['checkPath'], `must be false with web.scan.envVersion "${s.envVersion}" (the default is true): WeChat checks the page against the released version only and answers 41030 (invalid page) to every QR code request`);
    }
  },
);

/** Follow the Official Account's QR code to log in on a PC (扫码关注公众号登录): /qr/tickets and the OA's server URL. */
const mpQr = withCheck(
  z.strictObject({
    /** The Official Account (default: web.mp's, with its secret). */
    appid: appid.optional(),
    secret: z.string().min(1, { error: 'must not be empty' }).optional(),
    /** Where its access_token comes from: stable_token (shared safely with other systems) or token. */
    tokenSource: z.enum(['stable_token', 'token'], { error: 'must be "stable_token" or "token"' }).default('stable_token'),
    /** 服务器配置 Token: 3 to 32 letters or digits, as entered in the OA console; read it from ${ENV}. */
    token: z.string({ error: 'is required (use ${ENV_NAME} to read it from the environment)' }).regex(/^[A-Za-z0-9]{3,32}$/, { error: 'must be 3 to 32 letters or digits (the Token of the OA console)' }),
    /** 服务器配置 EncodingAESKey: 43 letters or digits; needed for encrypt compatible or safe. */
    encodingAESKey: z.string().regex(/^[A-Za-z0-9]{43}$/, { error: 'must be 43 letters or digits (the EncodingAESKey of the OA console)' }).optional(),
    /** 消息加解密方式: plaintext (明文), compatible (兼容: both accepted) or safe (安全: only encrypted messages). */
    encrypt: z.enum(['plaintext', 'compatible', 'safe'], { error: 'must be "plaintext", "compatible" or "safe"' }).default('plaintext'),
    /** The server URL's path (服务器地址 is web.publicUrl + this). */
    eventsPath: endpointPath.default('/wx/mp/events'),
    /** The temporary QR code's life (cgi-bin/qrcode/create expire_seconds), at most 30 days. */
    ticketTtl: duration(10_000).refine((ms) => ms <= 30 * 24 * 3600_000, { error: "must be at most 30d (WeChat's limit)" }).prefault('2m'),
    /** A text message sent back to the user in WeChat once the PC is logged in (e.g. "已登录"); none if absent. */
    reply: z.string().min(1).max(600).optional(),
    /** Serve a demo PC page at /qr/demo that shows the QR code and logs in. */
    demo: z.boolean().default(false),
  }),
  (value, report) => {
    const q = obj(value);
    if ((q.encrypt === 'compatible' || q.encrypt === 'safe') && q.encodingAESKey === undefined) report(['encodingAESKey'], `is required with encrypt: ${q.encrypt}`);
  },
);

/** web: browser logins (Official Account OAuth, website QR login, scan-to-login with the mini-program). Off unless set. */
export const web = withCheck(
  z.strictObject({
    /** The gateway's origin as browsers reach it: OAuth redirect_uri and cookie security come from it, never from Host. */
    publicUrl: origin,
    /** Where ?redirect= may send the browser after a login: path prefixes on publicUrl and other origins. */
    redirects: z.array(redirectRule).default(['/']),
    /** Origins (besides publicUrl) whose pages may send unsafe requests with the session cookie. */
    origins: z.array(origin).default([]),
    cookie: z
      .strictObject({
        /** Session cookie name; "__Host-" is put before it when publicUrl is https. */
        name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, { error: 'must be 1-64 letters, digits, "_" or "-"' }).default('wxgate_session'),
        /** CSRF defence for unsafe methods on cookie sessions: the Origin header, or a double-submit token. */
        csrf: z.enum(['origin', 'double-submit'], { error: 'must be "origin" or "double-submit"' }).default('origin'),
      })
      .prefault({}),
    /** HMAC key for the OAuth state; absent: a random key, shared through Redis with the redis store. */
    stateSecret: z.string().min(32, { error: 'must be at least 32 characters' }).optional(),
    /** How long an OAuth login may take from the redirect to WeChat to the callback (the state's life). */
    loginTimeout: duration(10_000).prefault('5m'),
    /** Official Account (公众号) web OAuth: /oauth/mp/authorize. */
    mp: z
      .strictObject({
        ...webApp,
        /** snsapi_base: openid only (no unionid: WeChat gives it only with snsapi_userinfo), no consent page; snsapi_userinfo: also the unionid, nickname and avatar. */
        scope: z
          .enum(['snsapi_base', 'snsapi_userinfo'], { error: 'must be "snsapi_base" or "snsapi_userinfo"' })
          .describe('snsapi_base: the openid only, silently, and no unionid (WeChat returns the unionid only with snsapi_userinfo); snsapi_userinfo: a consent page, then also the unionid')
          .default('snsapi_base'),
      })
      .optional(),
    /** Open Platform website app: QR login on a PC with the WeChat app (/oauth/open/authorize). */
    open: z.strictObject(webApp).optional(),
    /** Scan to log in on a PC with the mini-program: /scan/tickets. */
    scan: scan.optional(),
    mpQr: mpQr.optional(),
  }),
  (value, report) => {
    const w = obj(value);
    if (w.mp === undefined && w.open === undefined && w.scan === undefined && w.mpQr === undefined) {
      report([], 'enables nothing: configure web.mp, web.open, web.scan or web.mpQr (or leave web out)');
    }
  },
).optional();

type WebConfig = z.output<typeof web>;

/** web.mpQr's Official Account as it is used: its appid, secret and access_token source. */
export function mpQrApp(config: { web?: WebConfig }): { appid: string; secret: string; tokenSource: 'stable_token' | 'token' } | undefined {
  const q = config.web?.mpQr;
  if (!q) return undefined;
  const mp = config.web!.mp;
  const appid = q.appid ?? mp!.appid;
  const secret = q.secret ?? (mp && mp.appid === appid ? mp.secret : undefined);
  return { appid, secret: secret!, tokenSource: q.tokenSource };
}
