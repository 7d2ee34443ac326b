import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { ConfigError, loadConfigFile } from './config/load.js';
import { restartOnlyChanges, watchConfigFile } from './config/reload.js';
import { mpQrApp, type Config } from './config/schema.js';
import { createAdminApp } from './admin/admin.js';
import { AccountControls } from './session/controls.js';
import { createMetrics, type Metrics } from './metrics/metrics.js';
import { Proxy } from './proxy/proxy.js';
import { createUpgradeHandler } from './proxy/websocket.js';
import { createHandler } from './server/app.js';
import { createStores } from './server/stores.js';
import { loadTlsFiles } from './server/tls.js';
import { createLogger, type Logger } from './base/logger.js';
import { Events } from './events/events.js';
import { Sessions } from './session/sessions.js';
import { AccessTokens } from './wechat/access-token.js';
import { WechatClient } from './wechat/client.js';
import { createWebContext, type WebContext } from './web/context.js';

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
   * opts.watch, when the file changes. `given`: that configuration instead of the file's (a worker gets
   * the one its primary checked).
   */
  reload(given?: Config): Promise<ReloadResult>;
  /** Stops accepting, lets in-flight requests finish (up to server.shutdownTimeout), closes the store. */
  close(): Promise<void>;
}

export type ReloadResult = { ok: true; changed: boolean } | { ok: false; error: string };

/** Why a listener could not be opened, in words (the errno codes listen() fails with). */
const LISTEN_FAILURES: Record<string, string> = {
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied (ports below 1024 need privileges)',
  EADDRNOTAVAIL: 'address not available on this host',
  ENOTFOUND: 'unknown host',
  EAI_AGAIN: 'host name lookup failed',
};

/**
 * A listener the configuration asks for could not be opened. The message names the listener, its
 * address and the configuration key: `cannot listen for metrics on 127.0.0.1:9100: address already in use
 * (metrics.port)`.
 */
export class ListenError extends Error {
  constructor(
    readonly listener: string,
    readonly address: string,
    readonly key: string,
    readonly code: string | undefined,
    reason: string,
  ) {
    super(`cannot listen for ${listener} on ${address}: ${reason} (${key})`);
    this.name = 'ListenError';
  }
}

function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

function listenFailure(err: unknown, listener: string, host: string, port: number, key: string): ListenError {
  const code = (err as NodeJS.ErrnoException).code;
  return new ListenError(listener, hostPort(host, port), key, code, (code && LISTEN_FAILURES[code]) ?? (err as Error).message);
}

/** `what`: the listener and its config key, for the error when it cannot listen. */
function listen(server: http.Server, port: number, host: string, what: { listener: string; key: string }): Promise<number> {
  return new Promise((resolve, reject) => {
    const failed = (err: Error) => reject(listenFailure(err, what.listener, host, port, what.key));
    server.once('error', failed);
    server.listen(port, host, () => {
      server.off('error', failed);
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

/**
 * The main listener's parser limits. node checks headersTimeout and requestTimeout only every
 * connectionsCheckingInterval (30 s by default, so a 20 s headersTimeout held a slow client for up to
 * 50 s): check every second, or more often for shorter timeouts.
 */
function serverOptions(config: Config): http.ServerOptions {
  const { maxHeaderSize, headersTimeout, requestTimeout } = config.server;
  return { maxHeaderSize, connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(Math.min(headersTimeout, requestTimeout) / 4))) };
}

function urlOf(host: string, port: number, scheme = 'http'): string {
  const h = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  return `${scheme}://${h}:${port}`;
}

export interface StartOptions {
  log?: Logger;
  configFile?: string;
  watch?: boolean;
  /** server.workers > 1: this process is that worker (1…N) of a primary (src/cluster.ts) */
  worker?: number;
  /** false: leave that listener to another process (the primary serves metrics.port, worker 1 the admin API) */
  listeners?: { metrics?: boolean; admin?: boolean };
}

/**
 * Starts the gateway (and, when the config asks for them, the dev simulator and example upstream).
 * All or nothing: when any part fails to start (a listener whose port is taken: a ListenError), what was
 * opened already (listeners, Redis connections, timers) is closed again before the error is thrown.
 */
export async function startGateway(config: Config, opts: StartOptions = {}): Promise<Gateway> {
  const undo: Array<() => Promise<void> | void> = [];
  try {
    return await openGateway(config, opts, undo);
  } catch (err) {
    for (const c of undo.reverse()) {
      try {
        await c();
      } catch {
        // closing what is left of a failed start: nothing more to do
      }
    }
    throw err;
  }
}

/** `undo`: what it opened so far, pushed as it goes, for startGateway to close if a later step fails. */
async function openGateway(config: Config, opts: StartOptions, undo: Array<() => Promise<void> | void>): Promise<Gateway> {
  const log = opts.log ?? createLogger(config.log.level);
  // first, so that a missing or bad certificate stops the start before anything is opened
  const tlsFiles = config.server.tls ? loadTlsFiles(config.server.tls) : undefined;
  const metrics = createMetrics();
  const closers: Array<() => Promise<void> | void> = [];

  // the apps whose secrets the gateway holds: the mini-programs, and the web apps of browser logins
  const secretApps = [...config.wechat.apps, ...(config.web?.mp ? [config.web.mp] : []), ...(config.web?.open ? [config.web.open] : [])];
  // web.mpQr: the Official Account's access_token comes from the shared service, like the mini-programs'
  const qrApp = mpQrApp(config);
  if (qrApp && !secretApps.some((a) => a.appid === qrApp.appid)) secretApps.push(qrApp);
  let apiBase = config.wechat.apiBase;
  let oauthBase = config.wechat.oauthBase;
  let mpBase: string | undefined;
  /** the gateway's own server URL for the simulator's Official Account pushes, once it listens */
  let mpEventsUrl: string | undefined;
  if (config.dev.simulator) {
    const mpQr = config.web?.mpQr;
    // src/dev/ is loaded only when the config asks for it: a production process never loads it
    const { startSimulator } = await import('./dev/simulator.js');
    const sim = await startSimulator(config.dev.simulatorPort, '127.0.0.1', {
      apps: Object.fromEntries(secretApps.map((a) => [a.appid, a.secret])),
      ...(mpQr && qrApp
        ? { mp: { appid: qrApp.appid, token: mpQr.token, encodingAESKey: mpQr.encodingAESKey, encrypt: mpQr.encrypt, url: () => mpEventsUrl } }
        : {}),
    }).catch((err: unknown) => {
      throw listenFailure(err, 'the dev simulator', '127.0.0.1', config.dev.simulatorPort, 'dev.simulatorPort');
    });
    undo.push(() => sim.close());
    closers.push(() => sim.close());
    apiBase = sim.url;
    oauthBase = sim.url;
    mpBase = sim.url;
    const banner = `DEV MODE: WeChat simulator at ${sim.url} answers all logins; no real WeChat user can log in. Never use dev.simulator in production.`;
    log.warn({ simulator: sim.url }, banner);
    if (process.stderr.isTTY) process.stderr.write(`\n\x1b[1;33m*** ${banner} ***\x1b[0m\n\n`);
  }
  if (config.dev.exampleUpstream) {
    const { createExampleUpstream } = await import('./dev/example-upstream.js');
    const upstream = createExampleUpstream();
    const port = await listen(upstream, config.dev.exampleUpstreamPort, '127.0.0.1', { listener: 'the dev example upstream', key: 'dev.exampleUpstreamPort' });
    undo.push(() => closeServer(upstream, 0));
    closers.push(() => closeServer(upstream, 1000));
    log.warn({ url: urlOf('127.0.0.1', port) }, 'DEV MODE: example upstream started');
  }

  // session.store: memory, or Redis for every part that keeps state (src/server/stores.ts)
  const stores = await createStores(config, metrics, log);
  undo.push(() => stores.close());
  const sessions = new Sessions(stores.sessions, config.session, metrics, log.child({ part: 'sessions' }));
  // account controls: blocks, the login audit trail (its own log lines, part: audit), the device list
  sessions.controls = new AccountControls(
    stores.accounts,
    { history: config.audit.history, historyKeep: config.audit.historyKeep, maxAge: config.session.maxAge, logOpenid: config.log.openid },
    log.child({ part: 'audit' }),
  );
  if (config.events && stores.seen) {
    const events = new Events({
      ...config.events,
      seen: stores.seen,
      metrics,
      log: log.child({ part: 'events' }),
    });
    sessions.events = events;
    closers.push(() => events.close());
    undo.push(() => events.close(0));
  }
  const wechat = new WechatClient({ apiBase, timeout: config.wechat.timeout, apps: secretApps, metrics });
  const accessTokens = new AccessTokens({
    apps: qrApp ? [...config.wechat.apps, qrApp] : config.wechat.apps,
    wechat,
    store: stores.tokens,
    redis: stores.redis,
    metrics,
    log: log.child({ part: 'access_token' }),
    timeout: config.wechat.timeout,
  });
  undo.push(() => wechat.close(), () => accessTokens.close());
  let web: WebContext | undefined;
  if (config.web && stores.web) web = createWebContext(config, stores.web);
  const proxy = new Proxy(metrics, log.child({ part: 'proxy' }), web?.cookies.names);
  undo.push(() => proxy.close());
  // The request path is built from the config; a reload builds it anew and swaps it in whole.
  // aborted when close() begins: long polls (scan tickets) answer at once rather than hold the drain
  const draining = new AbortController();
  const build = (c: Config) =>
    createHandler({ config: c, sessions, wechat, accessTokens, replay: stores.replay, metrics, proxy, log, loginLimiter: stores.loginLimiter(c.limits.login), web, oauthBase, mpBase, draining: draining.signal });
  let live = config;
  let handler = build(config);

  // server.tls: HTTPS on the main listener (the same handler); its files are read again at every reload
  const server: http.Server = tlsFiles
    ? (https.createServer({ ...serverOptions(config), ...tlsFiles }, (req, res) => handler(req, res)) as unknown as http.Server)
    : http.createServer(serverOptions(config), (req, res) => handler(req, res));
  trackConnections(server);
  // WebSockets: authenticated like any proxied request; a reload applies to sockets opened after it
  const upgrades = createUpgradeHandler({ config: () => live, sessions, proxy, metrics, log: log.child({ part: 'websocket' }), web, fallback: (req, res) => handler(req, res) });
  server.on('upgrade', upgrades);
  undo.push(() => upgrades.close());
  const applyServerLimits = (c: Config) => {
    server.maxConnections = c.server.maxConnections > 0 ? c.server.maxConnections : Infinity;
    server.requestTimeout = c.server.requestTimeout;
    server.headersTimeout = c.server.headersTimeout;
    server.keepAliveTimeout = c.server.keepAliveTimeout;
  };
  applyServerLimits(config);
  metrics.configReloadSuccess.set(1);
  metrics.configReloadTimestamp.set(Date.now() / 1000);
  const port = await listen(server, config.server.port, config.server.host, { listener: 'requests', key: 'server.port' });
  undo.push(() => closeServer(server, 0));
  const url = urlOf(config.server.host, port, tlsFiles ? 'https' : 'http');
  if (config.web?.mpQr) mpEventsUrl = `${url}${config.web.mpQr.eventsPath}`;

  let metricsUrl: string | undefined;
  let metricsServer: http.Server | undefined;
  if (config.metrics.enabled && config.metrics.port !== undefined && opts.listeners?.metrics !== false) {
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
    const mport = await listen(metricsServer, config.metrics.port, config.metrics.host, { listener: 'metrics', key: 'metrics.port' });
    const opened = metricsServer;
    undo.push(() => closeServer(opened, 0));
    metricsUrl = urlOf(config.metrics.host, mport);
  }
  let adminUrl: string | undefined;
  let adminServer: http.Server | undefined;
  if (config.admin && opts.listeners?.admin !== false) {
    adminServer = http.createServer(
      createAdminApp({
        token: config.admin.token,
        sessions,
        controls: sessions.controls,
        ttl: config.session.ttl,
        bodyLimit: config.server.bodyLimit,
        accessTokens,
        wechat,
        resetSessionKey: config.admin.resetSessionKey,
        log: log.child({ part: 'admin' }),
      }).callback(),
    );
    adminUrl = urlOf(config.admin.host, await listen(adminServer, config.admin.port, config.admin.host, { listener: 'the admin API', key: 'admin.port' }));
    const opened = adminServer;
    undo.push(() => closeServer(opened, 0));
  }
  log.info(
    {
      url,
      admin: adminUrl ?? 'off',
      // a worker leaves metrics.port to its primary
      metrics: metricsUrl ?? (!config.metrics.enabled ? 'off' : config.metrics.port !== undefined ? 'primary' : `${url}${config.metrics.path}`),
      store: stores.kind,
      routes: config.routes.length,
    },
    // a worker's primary says "wxgate listening" once every worker is
    opts.worker !== undefined ? 'wxgate worker listening' : 'wxgate listening',
  );

  const reload = async (given?: Config): Promise<ReloadResult> => {
    const file = opts.configFile;
    const fail = (error: string): ReloadResult => {
      metrics.configReloadSuccess.set(0);
      log.error({ file, problems: error.split('\n') }, 'config reload rejected; the previous configuration keeps serving');
      return { ok: false, error };
    };
    if (!file && !given) return fail('no configuration file to reload (the gateway was started from an object)');
    let next: Config;
    try {
      next = given ?? loadConfigFile(file!);
    } catch (err) {
      return fail(err instanceof ConfigError ? err.message : (err as Error).message);
    }
    const fixed = restartOnlyChanges(live, next);
    if (fixed.length) return fail(`these settings cannot change while the gateway runs (restart to apply them): ${fixed.join(', ')}`);
    // a renewed certificate: read again at every reload, refused (the old one kept) when it does not load
    let renewed: { cert: Buffer; key: Buffer } | undefined;
    if (next.server.tls) {
      try {
        renewed = loadTlsFiles(next.server.tls);
      } catch (err) {
        return fail((err as Error).message);
      }
    }
    const changed = JSON.stringify(next) !== JSON.stringify(live);
    if (changed) {
      handler = build(next);
      proxy.prepare(next.routes);
      applyServerLimits(next);
      live = next;
    }
    if (renewed) (server as unknown as https.Server).setSecureContext(renewed);
    metrics.configReloadSuccess.set(1);
    metrics.configReloadTimestamp.set(Date.now() / 1000);
    log.info({ file, changed, routes: next.routes.length, ...(renewed ? { tls: 'certificate read again' } : {}) }, changed ? 'config reloaded' : 'config reloaded (no change)');
    return { ok: true, changed };
  };
  const watcher = opts.watch && opts.configFile ? watchConfigFile(opts.configFile, () => void reload()) : undefined;

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      watcher?.close();
      draining.abort();
      // open WebSockets are closed at once (1001, clients reconnect elsewhere) while the HTTP drain runs
      await Promise.all([closeServer(server, live.server.shutdownTimeout), upgrades.close()]);
      if (metricsServer) await closeServer(metricsServer, 1000);
      if (adminServer) await closeServer(adminServer, 1000);
      await proxy.close();
      await accessTokens.close();
      wechat.close();
      await stores.close();
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
