import { isIP } from 'node:net';
import { z } from 'zod';
import { parseDuration } from './duration.js';

/** A duration string with a unit, turned into milliseconds. */
const duration = (min = 1) =>
  z
    .string({ error: 'must be a duration with a unit, e.g. "500ms", "2s", "2h", "30d"' })
    .transform((text, ctx) => {
      const ms = parseDuration(text);
      if (ms === undefined) {
        ctx.addIssue({ code: 'custom', message: 'must be a duration with a unit, e.g. "500ms", "2s", "2h", "30d"' });
        return z.NEVER;
      }
      if (ms < min) {
        ctx.addIssue({ code: 'custom', message: `must be at least ${min}ms` });
        return z.NEVER;
      }
      return ms;
    });

const SIZE = /^(\d+)(b|kb|mb)$/i;
const size = z
  .string({ error: 'must be a size such as "4kb" or "1mb"' })
  .transform((text, ctx) => {
    const m = SIZE.exec(text.trim());
    if (!m) {
      ctx.addIssue({ code: 'custom', message: 'must be a size such as "4kb" or "1mb"' });
      return z.NEVER;
    }
    const unit = m[2]!.toLowerCase();
    return Number(m[1]) * (unit === 'mb' ? 1024 * 1024 : unit === 'kb' ? 1024 : 1);
  });

/** A port; digits in a string are taken too, so a port may come from the environment (`port: ${PORT:-8080}`). */
const port = z.preprocess(
  (v) => (typeof v === 'string' && /^\d{1,5}$/.test(v) ? Number(v) : v),
  z.number({ error: 'must be a port number' }).int().min(0).max(65535, { error: 'must be a port number (0-65535)' }),
);
const host = z.string().min(1);

const httpUrl = z.string({ error: 'must be an http(s) URL' }).refine(
  (s) => {
    try {
      const u = new URL(s);
      return (u.protocol === 'http:' || u.protocol === 'https:') && !u.username && !u.password && !u.hash;
    } catch {
      return false;
    }
  },
  { error: 'must be an http(s) URL' },
);

const redisUrl = z.string({ error: 'must be a redis:// or rediss:// URL' }).refine(
  (s) => {
    try {
      return ['redis:', 'rediss:'].includes(new URL(s).protocol);
    } catch {
      return false;
    }
  },
  { error: 'must be a redis:// or rediss:// URL' },
);

const endpointPath = z
  .string()
  .regex(/^\/[A-Za-z0-9._~\-/]*$/, { error: 'must be an absolute path such as "/login"' });

/** Route prefixes: absolute, no trailing slash (except "/"), no dot segments, empty segments or escapes. */
const routePath = z
  .string({ error: 'must be a path prefix such as "/api"' })
  .refine((p) => p === '/' || /^(\/[A-Za-z0-9_~\-!$&'()*+,=:@]+(\.[A-Za-z0-9_~\-!$&'()*+,=:@]+)*)+$/.test(p), {
    error: 'must be a path prefix such as "/api": starts with "/", no trailing "/", no "." or ".." segments, no "//", "%", "?", "#" or ";"',
  });

const appid = z.string().regex(/^wx[0-9a-zA-Z]{16}$/, { error: 'must be a WeChat appid: "wx" and 16 letters or digits' });

const cidr = z.string().refine(
  (s) => {
    const [addr, bits, ...rest] = s.split('/');
    if (rest.length || !addr || !isIP(addr)) return false;
    if (bits === undefined) return true;
    const n = Number(bits);
    return /^\d+$/.test(bits) && n <= (isIP(addr) === 4 ? 32 : 128);
  },
  { error: 'must be an IP address or CIDR range, e.g. "10.0.0.0/8"' },
);

const ROUTE_NAME = /^[a-zA-Z_][a-zA-Z0-9_.-]*$/;

/** An origin: scheme, host and port only ("https://m.example.com"). */
const origin = z.string({ error: 'must be an origin such as "https://m.example.com"' }).refine(
  (s) => {
    try {
      const u = new URL(s);
      return (u.protocol === 'http:' || u.protocol === 'https:') && u.origin === s.replace(/\/$/, '');
    } catch {
      return false;
    }
  },
  { error: 'must be an origin such as "https://m.example.com" (scheme, host and port; no path, query or credentials)' },
);

/** A redirect target after a web login: a local path prefix ("/", "/shop") or an origin. */
const redirectRule = z.union([z.string().regex(/^\/[A-Za-z0-9._~\-/]*$/), origin], {
  error: 'must be a path such as "/shop" or an origin such as "https://shop.example.com"',
});

/** A web app's credentials (Official Account or Open Platform website app). */
const webApp = {
  appid,
  secret: z.string({ error: 'is required (use ${ENV_NAME} to read it from the environment)' }).min(1, { error: 'must not be empty' }),
};

/** Where WeChat's browser pages live (connect/oauth2/authorize, connect/qrconnect). */
export const DEFAULT_OAUTH_BASE = 'https://open.weixin.qq.com';

export const DEFAULT_API_BASE = 'https://api.weixin.qq.com';

/** Where WeChat shows an Official Account QR code by its ticket (cgi-bin/showqrcode). */
export const DEFAULT_MP_BASE = 'https://mp.weixin.qq.com';

/** Request headers routes[].headers may not set, and why (lower-case names). */
const RESERVED_HEADERS: ReadonlyArray<[RegExp, string]> = [
  [/^x[-_](openid|unionid|appid|wx[-_]phone)$/, 'is an identity header: the gateway sets it from the session'],
  [/^(connection|keep-alive|proxy-connection|te|trailer|upgrade|proxy-authorization|proxy-authenticate|expect)$/, 'is a hop-by-hop header (it concerns one connection, not the upstream)'],
  [/^(host|content-length|transfer-encoding)$/, 'frames the request: the gateway sets it'],
  [/^(authorization|cookie)$/, "carries the client's credentials to the gateway: the gateway strips it and does not send one of its own"],
  [/^sec-websocket-/, "belongs to the WebSocket handshake between the client and the upstream"],
];
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** routes[].headers: { Name: value }; names are HTTP tokens, none the gateway sets or strips itself. */
const routeHeaders = z
  .record(
    z.string(),
    z
      .union([z.string(), z.number()], { error: 'must be a string' })
      .transform(String)
      .refine((v) => HEADER_VALUE.test(v), { error: 'must not contain control characters (CR, LF, NUL)' }),
  )
  .superRefine((headers, ctx) => {
    const seen = new Set<string>();
    for (const name of Object.keys(headers)) {
      const lower = name.toLowerCase();
      if (!HEADER_NAME.test(name)) ctx.addIssue({ code: 'custom', path: [name], message: 'is not a valid header name (letters, digits and !#$%&\'*+-.^_`|~ only)' });
      else if (seen.has(lower)) ctx.addIssue({ code: 'custom', path: [name], message: 'is given twice (header names are case-insensitive)' });
      else {
        const reserved = RESERVED_HEADERS.find(([re]) => re.test(lower));
        if (reserved) ctx.addIssue({ code: 'custom', path: [name], message: `cannot be set: it ${reserved[1]}` });
      }
      seen.add(lower);
    }
  });

export const configSchema = z
  .strictObject({
    server: z
      .strictObject({
        host: host.default('0.0.0.0'),
        port: port.default(8080),
        /** Peers whose X-Forwarded-For / -Proto / -Host are believed (load balancers). */
        trustedProxies: z.array(cidr).default([]),
        /** Largest request body accepted on the gateway's own JSON endpoints. */
        bodyLimit: size.prefault('4kb'),
        /** How long SIGTERM waits for in-flight requests before closing. */
        shutdownTimeout: duration().prefault('10s'),
        requestTimeout: duration().prefault('60s'),
        headersTimeout: duration().prefault('20s'),
        keepAliveTimeout: duration().prefault('5s'),
        /** Largest request head (request line and headers) node's parser accepts; beyond it node answers 431. */
        maxHeaderSize: size.refine((n) => n >= 1024, { error: 'must be at least 1kb' }).prefault('16kb'),
        /** Open client connections at most; node closes further ones at once (0 = no limit). */
        maxConnections: z.number().int().min(0).default(10_000),
        /** HTTPS on the main listener: PEM files of the certificate (chain) and its key, read at start and again at every reload. */
        tls: z.strictObject({ cert: z.string().min(1), key: z.string().min(1) }).optional(),
        /** Gateway processes (node:cluster workers) sharing the listener: a number, or "auto" = available cores. */
        workers: z
          .union([z.number().int().min(1).max(256), z.literal('auto')], { error: 'must be a number of workers (1-256) or "auto" (one per available core)' })
          .default(1),
      })
      .prefault({}),
    endpoints: z
      .strictObject({
        login: endpointPath.default('/login'),
        session: endpointPath.default('/session'),
        logout: endpointPath.default('/logout'),
        healthz: endpointPath.default('/healthz'),
        readyz: endpointPath.default('/readyz'),
        /** POST: WeChat open data (encryptedData + iv) decrypted with the session's session_key. */
        decrypt: endpointPath.default('/wx/decrypt'),
        /** POST: a getPhoneNumber code → the user's phone number (wxa/business/getuserphonenumber). */
        phone: endpointPath.default('/wx/phone'),
        /** GET: the OpenAPI description of these endpoints. */
        openapi: endpointPath.default('/openapi.json'),
      })
      .prefault({}),
    wechat: z
      .strictObject({
        apiBase: httpUrl.optional(),
        /** WeChat's browser pages for web logins (default https://open.weixin.qq.com; the simulator with dev.simulator). */
        oauthBase: httpUrl.optional(),
        /** Where Official Account QR codes are shown (showqrcode; default https://mp.weixin.qq.com; the simulator with dev.simulator). */
        mpBase: httpUrl.optional(),
        timeout: duration().prefault('3s'),
        apps: z
          .array(
            z.strictObject({
              appid,
              secret: z.string({ error: 'is required (use ${ENV_NAME} to read it from the environment)' }).min(1, { error: 'must not be empty' }),
              name: z.string().optional(),
              /** Where this app's access_token comes from (see access-token.ts). */
              tokenSource: z
                .enum(['stable_token', 'token', 'external'], { error: 'must be "stable_token", "token" or "external"' })
                .default('stable_token'),
              /** tokenSource external: the Redis key or the URL another system keeps the token at. */
              externalToken: z
                .strictObject({ redisKey: z.string().min(1).optional(), url: httpUrl.optional() })
                .refine((e) => (e.redisKey === undefined) !== (e.url === undefined), { error: 'needs exactly one of redisKey and url' })
                .optional(),
            }),
          )
          .min(1, { error: 'must list at least one mini-program app' }),
      }),
    session: z
      .strictObject({
        store: z.enum(['memory', 'redis'], { error: 'must be "memory" or "redis"' }).default('memory'),
        redis: z
          .strictObject({
            url: redisUrl.default('redis://127.0.0.1:6379'),
            /** Redis Sentinel: sentinel addresses ("host:port") and the monitored master's name. */
            sentinels: z.array(z.string().regex(/^[^\s:]+:\d{1,5}$/, { error: 'must be "host:port"' })).min(1).optional(),
            name: z.string().min(1).optional(),
            /** Redis Cluster: some of its nodes (redis:// URLs); the rest are discovered. */
            cluster: z.array(redisUrl).min(1).optional(),
            keyPrefix: z.string().regex(/^[A-Za-z0-9:_.-]*$/).default('wxgate:'),
            connectTimeout: duration().prefault('2s'),
            /** A command slower than this fails the request with 503 instead of waiting. */
            commandTimeout: duration().prefault('500ms'),
          })
          .prefault({}),
        /** Idle lifetime: a session unused this long is gone. Activity moves the deadline forward. */
        ttl: duration(1000).prefault('2h'),
        /** Absolute lifetime: after this the user logs in again, however active. */
        maxAge: duration(1000).prefault('30d'),
        /** Activity is written to the store at most this often per session (staleness of the idle deadline). */
        refreshInterval: duration().prefault('1m'),
        /** Live sessions one user (appid, openid) may hold; the oldest is revoked beyond this. */
        maxPerUser: z.number().int().min(1).max(1000).default(10),
        cache: z
          .strictObject({
            /** Sessions kept in the in-process LRU (0 turns it off). */
            max: z.number().int().min(0).default(100_000),
            /** How long a cached session is trusted before the store is asked again. */
            ttl: duration().prefault('10s'),
            /** How long a token the store does not know is answered 401 without asking the store again (0 turns it off). */
            negativeTtl: duration(0).prefault('2s'),
            /** Unknown tokens remembered that way, in their own LRU (never the sessions' one). */
            negativeMax: z.number().int().min(0).default(10_000),
          })
          .prefault({}),
      })
      .prefault({}),
    routes: z
      .array(
        z.strictObject({
          name: z.string().regex(ROUTE_NAME, { error: 'must be letters, digits, "_", "." or "-"' }).optional(),
          path: routePath,
          /** One URL, or a list of them (targets, taken in turn; one whose connection fails is skipped for failTimeout). */
          upstream: z.union([httpUrl, z.array(httpUrl).min(1, { error: 'must list at least one URL' }).refine((l) => new Set(l.map((u) => u.replace(/\/+$/, ''))).size === l.length, { error: 'lists the same URL twice' })], {
            error: (iss) => (iss.input === undefined ? 'is required' : 'must be an http(s) URL or a list of them'),
          }),
          /** How long a target whose connection failed (refused, connect timeout, reset) is skipped; "0s" = never. */
          failTimeout: duration(0).prefault('10s'),
          /** Send the path without the route's prefix ("/api/v1/x" on "/api/v1" → "/x"). */
          stripPrefix: z.boolean().optional(),
          /** Extra request headers the upstream gets, replacing a client header of the same name. */
          headers: routeHeaders.optional(),
          /** WebSocket upgrades on this route: a socket is closed after maxLifetime. */
          websocket: z.strictObject({ maxLifetime: duration().prefault('1h') }).prefault({}),
          auth: z.enum(['required', 'none'], { error: 'must be "required" or "none"' }).default('required'),
          /** The upstream must start answering within this time (idle time between bytes). */
          timeout: duration().prefault('30s'),
          /** Only sessions of these apps pass (403 app_not_allowed for others); absent = every configured app. */
          apps: z.array(appid).min(1, { error: 'must list at least one appid (leave "apps" out to allow every app)' }).optional(),
          /** Send the phone number the user granted (POST /wx/phone) as X-Wx-Phone (E.164); absent until they have. */
          forwardPhone: z.boolean().optional(),
          /** Largest request body passed to the upstream (413 beyond it); absent = no limit. */
          bodyLimit: size.optional(),
        }),
      )
      .default([]),
    /** Browser logins: Official Account OAuth, website QR login, scan-to-login with the mini-program. Off unless set. */
    web: z
      .strictObject({
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
        scan: z
          .strictObject({
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
          })
          .optional(),
        /** Follow the Official Account's QR code to log in on a PC (扫码关注公众号登录): /qr/tickets and the OA's server URL. */
        mpQr: z
          .strictObject({
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
            ticketTtl: duration(10_000).refine((ms) => ms <= 30 * 24 * 3600_000, { error: 'must be at most 30d (WeChat\'s limit)' }).prefault('2m'),
            /** A text message sent back to the user in WeChat once the PC is logged in (e.g. "已登录"); none if absent. */
            reply: z.string().min(1).max(600).optional(),
            /** Serve a demo PC page at /qr/demo that shows the QR code and logs in. */
            demo: z.boolean().default(false),
          })
          .optional(),
      })
      .optional(),
    /** Limits on what one client may ask for. */
    limits: z
      .strictObject({
        /**
         * POST /login per client IP (IPv6: per /64), a token bucket kept in the session store so replicas
         * and workers share it: `burst` logins at once, refilled at `perIp` per `window`.
         */
        login: z
          .strictObject({
            /** Logins per window per client IP, sustained (0 turns the limit off). README "Limits" has the reasoning. */
            perIp: z.number().int().min(0).default(600),
            window: duration(1000).prefault('1m'),
            /** Logins one client IP may make at once after a quiet spell (the bucket's size); absent = perIp. */
            burst: z.number().int().min(1).optional(),
          })
          .prefault({}),
        /**
         * POST /wx/phone: WeChat charges for each getuserphonenumber call. Within `window` of the user's
         * grant, a new code is answered with the number kept for the user, without calling WeChat (unless
         * the body says "force": true); 0 = every code goes to WeChat.
         */
        phone: z
          .strictObject({
            window: duration(0).prefault('30d'),
          })
          .prefault({}),
      })
      .prefault({}),
    metrics: z
      .strictObject({
        enabled: z.boolean().default(true),
        path: endpointPath.default('/metrics'),
        /** When set, /metrics is served only on this port (and host), not on the main listener. */
        port: port.optional(),
        host: host.default('127.0.0.1'),
      })
      .prefault({}),
    /** The admin API: its own listener, off unless configured. */
    admin: z
      .strictObject({
        port,
        host: host.default('127.0.0.1'),
        /** Bearer secret for the admin API; read it from the environment: ${WXGATE_ADMIN_TOKEN}. */
        token: z.string({ error: 'is required (use ${WXGATE_ADMIN_TOKEN})' }).min(24, { error: 'must be at least 24 characters' }),
        /**
         * Revoking a user (or a person) on the admin API also resets their session_key at WeChat
         * (wxa/resetusersessionkey), so data made with it no longer opens anywhere.
         */
        resetSessionKey: z.boolean({ error: 'must be true or false' }).default(false),
      })
      .optional(),
    /**
     * Login events for upstreams (a webhook): user.created, session.created, session.revoked, POSTed as
     * signed JSON, retried with backoff, never in the way of a login. Off unless configured.
     */
    events: z
      .strictObject({
        url: httpUrl,
        /** HMAC-SHA256 key of the X-Wxgate-Signature header; read it from the environment: ${WXGATE_EVENTS_SECRET}. */
        secret: z.string({ error: 'is required (use ${WXGATE_EVENTS_SECRET})' }).min(16, { error: 'must be at least 16 characters' }),
        /** Per delivery attempt. */
        timeout: duration().prefault('5s'),
        /** Attempts per event before it is given up (counted, logged). */
        attempts: z.number({ error: 'must be a whole number' }).int().min(1).max(30).default(8),
        /** Wait before the first retry; doubled each time (±20%), up to 5 minutes. */
        backoff: duration().prefault('1s'),
        /** Events waiting (new or to retry) per replica; beyond it new events are dropped (counted). */
        queue: z.number({ error: 'must be a whole number' }).int().min(1).max(1_000_000).default(10_000),
        /** How long an openid or unionid counts as seen for user.created (one small Redis key each). */
        seenTtl: duration(1000).prefault('400d'),
      })
      .optional(),
    /** The login audit trail (admin API: GET /users/…/events): the per-user history in the store. */
    audit: z
      .strictObject({
        /** Entries of each user's audit history kept in the store (GET /users/…/events); 0 = none (the audit log lines stay). */
        history: z.number().int().min(0).max(1000).default(50),
        /** How long a user's history lives after its latest entry. */
        historyKeep: duration(60_000).prefault('30d'),
      })
      .prefault({}),
    log: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        /** One JSON line per request at level info (request id, route, status, duration, upstream, user). */
        access: z.boolean().default(true),
        /** The user in access log lines: hash (of appid and openid; the same user, the same hash) or omit. */
        openid: z.enum(['hash', 'omit'], { error: 'must be "hash" or "omit"' }).default('hash'),
      })
      .prefault({}),
    /** Development helpers. Never set these in production. */
    dev: z
      .strictObject({
        /** Run the built-in WeChat simulator and send logins to it instead of WeChat. */
        simulator: z.boolean().default(false),
        simulatorPort: port.default(9100),
        /** Run a small echo service that shows the headers it received. */
        exampleUpstream: z.boolean().default(false),
        exampleUpstreamPort: port.default(9001),
      })
      .prefault({}),
  });

export function routeNameFromPath(path: string): string {
  return path === '/' ? 'root' : path.slice(1).replace(/[^A-Za-z0-9_.-]/g, '_');
}

type Parsed = z.output<typeof configSchema>;
/** A route as loaded: `upstreams` are its targets (trailing "/" dropped), `upstream` the first of them. */
export type RouteConfig = Omit<Parsed['routes'][number], 'upstream'> & { name: string; upstream: string; upstreams: readonly string[] };
/** The validated, defaulted configuration (durations in ms, sizes in bytes). */
export type Config = Omit<Parsed, 'routes' | 'wechat'> & {
  routes: RouteConfig[];
  wechat: Omit<Parsed['wechat'], 'apiBase' | 'oauthBase' | 'mpBase'> & { apiBase: string; oauthBase: string; mpBase: string };
};
export type AppConfig = Config['wechat']['apps'][number];

const isObj = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/**
 * Checks that span several keys. Runs on the raw (substituted) input, so its findings are listed
 * together with the schema's even when other keys are invalid.
 */
export function crossCheck(raw: unknown): { path: (string | number)[]; message: string }[] {
  const out: { path: (string | number)[]; message: string }[] = [];
  if (!isObj(raw)) return out;
  const routes = Array.isArray(raw.routes) ? raw.routes : [];
  const seenPaths = new Map<string, number>();
  const seenNames = new Map<string, number>();
  routes.forEach((r, i) => {
    if (!isObj(r) || typeof r.path !== 'string') return;
    const key = r.path.toLowerCase();
    const prev = seenPaths.get(key);
    if (prev !== undefined) out.push({ path: ['routes', i, 'path'], message: `duplicates routes[${prev}].path "${r.path}"` });
    else seenPaths.set(key, i);
    const name = typeof r.name === 'string' ? r.name : routeNameFromPath(r.path);
    const prevName = seenNames.get(name);
    if (prevName !== undefined) out.push({ path: ['routes', i, 'name'], message: `duplicates the name of routes[${prevName}] ("${name}")` });
    else seenNames.set(name, i);
  });
  const wechat = isObj(raw.wechat) ? raw.wechat : {};
  const apps = Array.isArray(wechat.apps) ? wechat.apps : [];
  const appids = new Map<string, number>();
  apps.forEach((a, i) => {
    if (!isObj(a) || typeof a.appid !== 'string') return;
    const prev = appids.get(a.appid);
    if (prev !== undefined) out.push({ path: ['wechat', 'apps', i, 'appid'], message: `"${a.appid}" is already listed at wechat.apps[${prev}]` });
    else appids.set(a.appid, i);
  });
  // web logins: their apps are session apps too (routes[].apps may name them), their paths are the gateway's
  const web = isObj(raw.web) ? raw.web : undefined;
  const webApps = new Map<string, string>();
  if (web) {
    for (const kind of ['mp', 'open'] as const) {
      const w = isObj(web[kind]) ? web[kind] : undefined;
      if (!w || typeof w.appid !== 'string') continue;
      if (appids.has(w.appid)) out.push({ path: ['web', kind, 'appid'], message: `"${w.appid}" is a mini-program of wechat.apps; a web app has its own appid` });
      else if (webApps.has(w.appid)) out.push({ path: ['web', kind, 'appid'], message: `"${w.appid}" is already web.${webApps.get(w.appid)}.appid` });
      else webApps.set(w.appid, kind);
    }
    if (web.mp === undefined && web.open === undefined && web.scan === undefined && web.mpQr === undefined) {
      out.push({ path: ['web'], message: 'enables nothing: configure web.mp, web.open, web.scan or web.mpQr (or leave web out)' });
    }
    out.push(...mpQrCheck(web, appids, webApps));
    const scan = isObj(web.scan) ? web.scan : undefined;
    if (scan && typeof scan.app === 'string' && !appids.has(scan.app)) {
      out.push({ path: ['web', 'scan', 'app'], message: `"${scan.app}" is not one of wechat.apps` });
    }
    // WeChat checks the page only against the released version: 41030 for every QR of trial/develop
    if (scan && (scan.envVersion === 'trial' || scan.envVersion === 'develop') && scan.checkPath !== false) {
      out.push({
        path: ['web', 'scan', 'checkPath'],
        message: `must be false with web.scan.envVersion "${scan.envVersion}" (the default is true): WeChat checks the page against the released version only and answers 41030 (invalid page) to every QR code request`,
      });
    }
    // /oauth/web/authorize is there with any web login, scan-to-login alone included
    const mpQr = isObj(web.mpQr) ? web.mpQr : undefined;
    const taken = ['/oauth', ...(scan ? ['/scan'] : []), ...(mpQr ? ['/qr', String(mpQr.eventsPath ?? '/wx/mp/events').toLowerCase()] : [])];
    routes.forEach((r, i) => {
      if (!isObj(r) || typeof r.path !== 'string') return;
      const p = r.path.toLowerCase();
      const hit = taken.find((t) => p === t || p.startsWith(`${t}/`));
      if (hit) out.push({ path: ['routes', i, 'path'], message: `is under ${hit}/, which the gateway answers itself for web logins` });
    });
  }
  routes.forEach((r, i) => {
    if (isObj(r) && r.forwardPhone === true && r.auth === 'none') {
      out.push({ path: ['routes', i, 'forwardPhone'], message: 'needs auth: required (without a session there is no phone number)' });
    }
    if (!isObj(r) || !Array.isArray(r.apps)) return;
    if (r.auth === 'none') out.push({ path: ['routes', i, 'apps'], message: 'needs auth: required (without a session there is no app to check)' });
    r.apps.forEach((a, j) => {
      if (typeof a === 'string' && !appids.has(a) && !webApps.has(a)) {
        out.push({ path: ['routes', i, 'apps', j], message: `"${a}" is not one of wechat.apps, web.mp, web.open or web.mpQr` });
      }
    });
  });
  apps.forEach((a, i) => {
    if (!isObj(a)) return;
    const ext = isObj(a.externalToken) ? a.externalToken : undefined;
    if (a.tokenSource === 'external' && !ext) {
      out.push({ path: ['wechat', 'apps', i, 'externalToken'], message: 'is required with tokenSource: external ({ redisKey } or { url })' });
    }
    if (ext && a.tokenSource !== 'external') out.push({ path: ['wechat', 'apps', i, 'externalToken'], message: 'needs tokenSource: external' });
    if (ext?.redisKey !== undefined && (isObj(raw.session) ? raw.session.store : undefined) !== 'redis') {
      out.push({ path: ['wechat', 'apps', i, 'externalToken', 'redisKey'], message: 'needs session.store: redis' });
    }
  });
  const dev = isObj(raw.dev) ? raw.dev : {};
  if (dev.simulator === true && wechat.apiBase !== undefined) {
    out.push({
      path: ['wechat', 'apiBase'],
      message: 'must not be set together with dev.simulator: true (the simulator replaces WeChat; remove one of them)',
    });
  }
  const endpoints = isObj(raw.endpoints) ? raw.endpoints : {};
  const metrics = isObj(raw.metrics) ? raw.metrics : {};
  const server = isObj(raw.server) ? raw.server : {};
  const own: Record<string, unknown> = {
    'endpoints.login': endpoints.login ?? '/login',
    'endpoints.session': endpoints.session ?? '/session',
    'endpoints.logout': endpoints.logout ?? '/logout',
    'endpoints.healthz': endpoints.healthz ?? '/healthz',
    'endpoints.readyz': endpoints.readyz ?? '/readyz',
    'endpoints.decrypt': endpoints.decrypt ?? '/wx/decrypt',
    'endpoints.phone': endpoints.phone ?? '/wx/phone',
    'endpoints.openapi': endpoints.openapi ?? '/openapi.json',
  };
  if (metrics.enabled !== false && metrics.port === undefined) own['metrics.path'] = metrics.path ?? '/metrics';
  if (web && isObj(web.mpQr)) own['web.mpQr.eventsPath'] = web.mpQr.eventsPath ?? '/wx/mp/events';
  const byPath = new Map<unknown, string>();
  for (const [key, p] of Object.entries(own)) {
    const prev = byPath.get(p);
    if (prev) out.push({ path: key.split('.'), message: `"${String(p)}" is already used by ${prev}` });
    else byPath.set(p, key);
  }
  const session = isObj(raw.session) ? raw.session : {};
  const redis = isObj(session.redis) ? session.redis : {};
  if (redis.sentinels !== undefined && redis.cluster !== undefined) {
    out.push({ path: ['session', 'redis', 'cluster'], message: 'cannot be combined with session.redis.sentinels' });
  }
  if (redis.sentinels !== undefined && redis.name === undefined) {
    out.push({ path: ['session', 'redis', 'name'], message: 'is required with sentinels: the name of the monitored master' });
  }
  // server.workers: each worker is a process of its own; what lives in one process cannot be shared
  if (server.workers === 'auto' || (typeof server.workers === 'number' && server.workers > 1)) {
    const n = `server.workers: ${String(server.workers)}`;
    if ((session.store ?? 'memory') === 'memory') {
      out.push({ path: ['session', 'store'], message: `must be "redis" with ${n}: the memory store keeps sessions inside one process, so a token from one worker would be unknown to the others (use session.store: redis, or server.workers: 1)` });
    }
    if (dev.simulator === true) {
      out.push({ path: ['dev', 'simulator'], message: `cannot run inside ${n} (its single-use codes live in one process): run \`wxgate simulate\` and point wechat.apiBase at it, or use server.workers: 1` });
    }
    const adminCfg = isObj(raw.admin) ? raw.admin : undefined;
    if (adminCfg && adminCfg.port === 0) out.push({ path: ['admin', 'port'], message: `must be a fixed port with ${n} (workers share listeners by address and port)` });
  }
  if (typeof metrics.port === 'number' && metrics.port !== 0 && metrics.port === (server.port ?? 8080)) {
    out.push({ path: ['metrics', 'port'], message: 'must differ from server.port' });
  }
  return out;
}

/**
 * web.mpQr: the Official Account is web.mp's unless it names its own (then with its secret); it is not a
 * mini-program or the website app; compatible and safe need the EncodingAESKey.
 */
function mpQrCheck(web: Record<string, unknown>, appids: Map<string, number>, webApps: Map<string, string>): { path: (string | number)[]; message: string }[] {
  const out: { path: (string | number)[]; message: string }[] = [];
  const q = isObj(web.mpQr) ? web.mpQr : undefined;
  if (!q) return out;
  const mp = isObj(web.mp) ? web.mp : undefined;
  if (q.appid === undefined) {
    if (!mp) out.push({ path: ['web', 'mpQr', 'appid'], message: 'is required (or configure web.mp: the same Official Account is used then)' });
    else if (q.secret !== undefined) out.push({ path: ['web', 'mpQr', 'secret'], message: "must be left out with web.mp's appid (web.mp.secret is used)" });
  } else if (typeof q.appid === 'string') {
    const sameAsMp = mp !== undefined && mp.appid === q.appid;
    if (appids.has(q.appid)) out.push({ path: ['web', 'mpQr', 'appid'], message: `"${q.appid}" is a mini-program of wechat.apps; an Official Account has its own appid` });
    else if (!sameAsMp && webApps.has(q.appid)) out.push({ path: ['web', 'mpQr', 'appid'], message: `"${q.appid}" is web.${webApps.get(q.appid)}.appid, not an Official Account` });
    if (sameAsMp && q.secret !== undefined) out.push({ path: ['web', 'mpQr', 'secret'], message: "must be left out with web.mp's appid (web.mp.secret is used)" });
    if (!sameAsMp && q.secret === undefined) out.push({ path: ['web', 'mpQr', 'secret'], message: 'is required (use ${ENV_NAME} to read it from the environment)' });
    // its sessions' app: routes[].apps may name it
    if (!appids.has(q.appid) && !webApps.has(q.appid)) webApps.set(q.appid, 'mpQr');
  }
  if ((q.encrypt === 'compatible' || q.encrypt === 'safe') && q.encodingAESKey === undefined) {
    out.push({ path: ['web', 'mpQr', 'encodingAESKey'], message: `is required with encrypt: ${q.encrypt}` });
  }
  return out;
}

/** web.mpQr's Official Account as it is used: its appid, secret and access_token source. */
export function mpQrApp(config: Config): { appid: string; secret: string; tokenSource: 'stable_token' | 'token' } | undefined {
  const q = config.web?.mpQr;
  if (!q) return undefined;
  const mp = config.web!.mp;
  const appid = q.appid ?? mp!.appid;
  const secret = q.secret ?? (mp && mp.appid === appid ? mp.secret : undefined);
  return { appid, secret: secret!, tokenSource: q.tokenSource };
}
