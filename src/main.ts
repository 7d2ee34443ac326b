import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { ConfigError, loadConfigFile } from './config/load.js';
import { restartOnlyChanges, watchConfigFile } from './config/reload.js';
import type { Config } from './config/schema.js';
import { createAdminApp } from './admin/admin.js';
import { createExampleUpstream } from './dev/example-upstream.js';
import { MemoryRateLimiter, RedisRateLimiter, type RateLimiter } from './login/rate-limit.js';
import { MemoryReplayStore, RedisReplayStore, type ReplayStore } from './login/replay.js';
import { createMetrics, type Metrics } from './metrics/metrics.js';
import { Proxy } from './proxy/proxy.js';
import { createUpgradeHandler } from './proxy/websocket.js';
import { createHandler } from './server/app.js';
import { createLogger, type Logger } from './server/logger.js';
import { MemoryStore } from './session/memory-store.js';
import { Events } from './events/events.js';
import { RedisStore } from './session/redis-store.js';
import { Sessions } from './session/sessions.js';
import type { SessionStore } from './session/types.js';
import { AccessTokens, MemoryTokenStore, RedisTokenStore } from './wechat/access-token.js';
import { WechatClient } from './wechat/client.js';
import { startSimulator } from './wechat/simulator.js';
import { createWebContext, type WebContext } from './web/context.js';
import { MemoryWebStore, RedisWebStore } from './web/store.js';

export interface Gateway {
  /** http://host:port of the main listener */
  url: string;
  port: number;
  /** http://host:port of the metrics listener, when metrics.port is set */
  metricsUrl?: string;
  /** http://host:port of the admin API, when configured */
  adminUrl?: string;
  server: http.Server;
  metrics: Metrics;
  log: Logger;
  /** The configuration in force (the last one loaded, or reloaded). */
  readonly config: Config;
  /**
   * Loads opts.configFile again and, when it is valid and changes only what may change live, swaps the
   * request path over to it (in-flight requests finish on the old one). Also on SIGHUP and, with
   * opts.watch, when the file changes.
   */
  reload(): Promise<ReloadResult>;
  /** Stops accepting, lets in-flight requests finish (up to server.shutdownTimeout), closes the store. */
  close(): Promise<void>;
}

export type ReloadResult = { ok: true; changed: boolean } | { ok: false; error: string };

function listen(server: http.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** The server's open client connections (kept per connection, nothing per request), for closeServer. */
const openSockets = new WeakMap<http.Server, Set<Socket>>();
function trackConnections(server: http.Server): void {
  const sockets = new Set<Socket>();
  openSockets.set(server, sockets);
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
}

/**
 * Drains a server: no new connections; every answer still to come (in flight now, or asked for on a
 * kept-alive connection meanwhile) says Connection: close and its connection is closed after it; idle
 * connections are closed at once and every 100 ms (as http-terminator does); whatever is left at
 * `deadline` is cut.
 */
function closeServer(server: http.Server, deadline: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => server.closeAllConnections(), deadline);
    timer.unref();
    server.prependListener('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
      res.shouldKeepAlive = false;
    });
    for (const socket of openSockets.get(server) ?? []) {
      // node keeps the response being written on a connection as socket._httpMessage
      const res = (socket as Socket & { _httpMessage?: http.ServerResponse | null })._httpMessage;
      if (res && !res.headersSent) res.shouldKeepAlive = false;
    }
    const sweep = setInterval(() => server.closeIdleConnections(), 100);
    sweep.unref();
    server.close(() => {
      clearTimeout(timer);
      clearInterval(sweep);
      resolve();
    });
    server.closeIdleConnections();
  });
}

function createStore(config: Config, metrics: Metrics, log: Logger): SessionStore {
  if (config.session.store === 'redis') {
    const r = config.session.redis;
    return new RedisStore({
      url: r.url,
      sentinels: r.sentinels,
      name: r.name,
      cluster: r.cluster,
      keyPrefix: r.keyPrefix,
      connectTimeout: r.connectTimeout,
      commandTimeout: r.commandTimeout,
      metrics,
      logger: log.child({ part: 'redis' }),
    });
  }
  // in this process: up for as long as the process is
  metrics.sessionStoreUp.set(1);
  return new MemoryStore();
}

/** Gives the store its connect time before taking traffic; starts anyway (then /readyz says 503). */
async function waitForStore(store: SessionStore, within: number, log: Logger): Promise<void> {
  const deadline = Date.now() + within;
  for (;;) {
    try {
      return await store.ping();
    } catch (err) {
      if (Date.now() >= deadline) {
        log.warn({ store: store.kind, err: (err as Error).message }, 'session store not reachable at start; serving 503 until it is');
        return;
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

/** limits.login: counted in Redis with the redis store (replicas share the budget), else in this process. */
function loginLimiter(config: Config, store: SessionStore): RateLimiter | undefined {
  const { perIp, window } = config.limits.login;
  if (perIp === 0) return undefined;
  if (store instanceof RedisStore) return new RedisRateLimiter(store.redis, `${config.session.redis.keyPrefix}rl:login:`, perIp, window);
  return new MemoryRateLimiter(perIp, window);
}

/**
 * The main listener's parser limits. node checks headersTimeout and requestTimeout only every
 * connectionsCheckingInterval (30 s by default, so a 20 s headersTimeout held a slow client for up to
 * 50 s): check every second, or more often for shorter timeouts.
 */
function serverOptions(config: Config): http.ServerOptions {
  const { maxHeaderSize, headersTimeout, requestTimeout } = config.server;
  return { maxHeaderSize, connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(Math.min(headersTimeout, requestTimeout) / 4))) };
}

function urlOf(host: string, port: number): string {
  const h = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  return `http://${h}:${port}`;
}

/** Starts the gateway (and, when the config asks for them, the dev simulator and example upstream). */
export async function startGateway(config: Config, opts: { log?: Logger; configFile?: string; watch?: boolean } = {}): Promise<Gateway> {
  const log = opts.log ?? createLogger(config.log.level);
  const metrics = createMetrics();
  const closers: Array<() => Promise<void> | void> = [];

  // the apps whose secrets the gateway holds: the mini-programs, and the web apps of browser logins
  const secretApps = [...config.wechat.apps, ...(config.web?.mp ? [config.web.mp] : []), ...(config.web?.open ? [config.web.open] : [])];
  let apiBase = config.wechat.apiBase;
  let oauthBase = config.wechat.oauthBase;
  if (config.dev.simulator) {
    const sim = await startSimulator(config.dev.simulatorPort, '127.0.0.1', {
      apps: Object.fromEntries(secretApps.map((a) => [a.appid, a.secret])),
    });
    closers.push(() => sim.close());
    apiBase = sim.url;
    oauthBase = sim.url;
    const banner = `DEV MODE: WeChat simulator at ${sim.url} answers all logins; no real WeChat user can log in. Never use dev.simulator in production.`;
    log.warn({ simulator: sim.url }, banner);
    if (process.stderr.isTTY) process.stderr.write(`\n\x1b[1;33m*** ${banner} ***\x1b[0m\n\n`);
  }
  if (config.dev.exampleUpstream) {
    const upstream = createExampleUpstream();
    const port = await listen(upstream, config.dev.exampleUpstreamPort, '127.0.0.1');
    closers.push(() => closeServer(upstream, 1000));
    log.warn({ url: urlOf('127.0.0.1', port) }, 'DEV MODE: example upstream started');
  }

  const store = createStore(config, metrics, log);
  await waitForStore(store, config.session.redis.connectTimeout, log);
  const sessions = new Sessions(store, config.session, metrics, log.child({ part: 'sessions' }));
  if (config.events) {
    const events = new Events({
      ...config.events,
      redis: store instanceof RedisStore ? store.redis : undefined,
      keyPrefix: config.session.redis.keyPrefix,
      metrics,
      log: log.child({ part: 'events' }),
    });
    sessions.events = events;
    closers.push(() => events.close());
  }
  const replay: ReplayStore =
    store instanceof RedisStore ? new RedisReplayStore(store.redis, config.session.redis.keyPrefix) : new MemoryReplayStore();
  if (replay instanceof MemoryReplayStore) closers.push(() => replay.close());
  const wechat = new WechatClient({ apiBase, timeout: config.wechat.timeout, apps: secretApps, metrics });
  const accessTokens = new AccessTokens({
    apps: config.wechat.apps,
    wechat,
    store: store instanceof RedisStore ? new RedisTokenStore(store.redis, config.session.redis.keyPrefix) : new MemoryTokenStore(),
    redis: store instanceof RedisStore ? store.redis : undefined,
    metrics,
    log: log.child({ part: 'access_token' }),
    timeout: config.wechat.timeout,
  });
  let web: WebContext | undefined;
  if (config.web) {
    const webStore = store instanceof RedisStore ? new RedisWebStore(store.redis, config.session.redis.keyPrefix) : new MemoryWebStore();
    if (webStore instanceof MemoryWebStore) closers.push(() => webStore.close());
    web = createWebContext(config, webStore);
  }
  const proxy = new Proxy(metrics, log.child({ part: 'proxy' }), web?.cookies.names);
  // The request path is built from the config; a reload builds it anew and swaps it in whole.
  const build = (c: Config) => createHandler({ config: c, sessions, wechat, accessTokens, replay, metrics, proxy, log, loginLimiter: loginLimiter(c, store), web, oauthBase });
  let live = config;
  let handler = build(config);

  const server = http.createServer(serverOptions(config), (req, res) => handler(req, res));
  trackConnections(server);
  // WebSockets: authenticated like any proxied request; a reload applies to sockets opened after it
  const upgrades = createUpgradeHandler({ config: () => live, sessions, proxy, metrics, log: log.child({ part: 'websocket' }), web, fallback: (req, res) => handler(req, res) });
  server.on('upgrade', upgrades);
  const applyServerLimits = (c: Config) => {
    server.maxConnections = c.server.maxConnections > 0 ? c.server.maxConnections : Infinity;
    server.requestTimeout = c.server.requestTimeout;
    server.headersTimeout = c.server.headersTimeout;
    server.keepAliveTimeout = c.server.keepAliveTimeout;
  };
  applyServerLimits(config);
  metrics.configReloadSuccess.set(1);
  metrics.configReloadTimestamp.set(Date.now() / 1000);
  const port = await listen(server, config.server.port, config.server.host);
  const url = urlOf(config.server.host, port);

  let metricsUrl: string | undefined;
  let metricsServer: http.Server | undefined;
  if (config.metrics.enabled && config.metrics.port !== undefined) {
    const path = config.metrics.path;
    metricsServer = http.createServer((req, res) => {
      if (req.url?.split('?')[0] !== path || (req.method !== 'GET' && req.method !== 'HEAD')) {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not_found","message":"Only the metrics path is served here."}');
        return;
      }
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        () => res.writeHead(500).end(),
      );
    });
    const mport = await listen(metricsServer, config.metrics.port, config.metrics.host);
    metricsUrl = urlOf(config.metrics.host, mport);
  }
  let adminUrl: string | undefined;
  let adminServer: http.Server | undefined;
  if (config.admin) {
    adminServer = http.createServer(createAdminApp({ token: config.admin.token, sessions, accessTokens, wechat, resetSessionKey: config.admin.resetSessionKey, log: log.child({ part: 'admin' }) }).callback());
    adminUrl = urlOf(config.admin.host, await listen(adminServer, config.admin.port, config.admin.host));
  }
  log.info(
    { url, admin: adminUrl ?? 'off', metrics: metricsUrl ?? (config.metrics.enabled ? `${url}${config.metrics.path}` : 'off'), store: store.kind, routes: config.routes.length },
    'wxgate listening',
  );

  const reload = async (): Promise<ReloadResult> => {
    const file = opts.configFile;
    const fail = (error: string): ReloadResult => {
      metrics.configReloadSuccess.set(0);
      log.error({ file, problems: error.split('\n') }, 'config reload rejected; the previous configuration keeps serving');
      return { ok: false, error };
    };
    if (!file) return fail('no configuration file to reload (the gateway was started from an object)');
    let next: Config;
    try {
      next = loadConfigFile(file);
    } catch (err) {
      return fail(err instanceof ConfigError ? err.message : (err as Error).message);
    }
    const fixed = restartOnlyChanges(live, next);
    if (fixed.length) return fail(`these settings cannot change while the gateway runs (restart to apply them): ${fixed.join(', ')}`);
    const changed = JSON.stringify(next) !== JSON.stringify(live);
    if (changed) {
      handler = build(next);
      proxy.prepare(next.routes);
      applyServerLimits(next);
      live = next;
    }
    metrics.configReloadSuccess.set(1);
    metrics.configReloadTimestamp.set(Date.now() / 1000);
    log.info({ file, changed, routes: next.routes.length }, changed ? 'config reloaded' : 'config reloaded (no change)');
    return { ok: true, changed };
  };
  const watcher = opts.watch && opts.configFile ? watchConfigFile(opts.configFile, () => void reload()) : undefined;

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      watcher?.close();
      // open WebSockets are closed at once (1001, clients reconnect elsewhere) while the HTTP drain runs
      await Promise.all([closeServer(server, live.server.shutdownTimeout), upgrades.close()]);
      if (metricsServer) await closeServer(metricsServer, 1000);
      if (adminServer) await closeServer(adminServer, 1000);
      await proxy.close();
      await accessTokens.close();
      wechat.close();
      await store.close();
      for (const c of closers.reverse()) await c();
    })());
  return {
    url,
    port,
    metricsUrl,
    adminUrl,
    server,
    metrics,
    log,
    get config() {
      return live;
    },
    reload,
    close,
  };
}
