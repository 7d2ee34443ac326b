import http from 'node:http';
import https from 'node:https';
import { applyServerLimits, closeServer, createMainServer, createMetricsServer, listenFailure, openListener } from './server/listeners.js';
import { createReloader, markLoaded, type ReloadResult } from './server/reloader.js';
import { watchConfigFile } from './config/reload.js';
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
  /** Stops accepting (before it returns), lets in-flight requests finish (up to server.shutdownTimeout), closes the store. */
  close(): Promise<void>;
}

export type { ReloadResult } from './server/reloader.js';

/** A listener could not be opened (src/server/listeners.ts); the CLI and the tests take it from here. */
export { ListenError } from './server/listeners.js';

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
    const { url } = await openListener(upstream, '127.0.0.1', config.dev.exampleUpstreamPort, { listener: 'the dev example upstream', key: 'dev.exampleUpstreamPort' }, undo);
    closers.push(() => closeServer(upstream, 1000));
    log.warn({ url }, 'DEV MODE: example upstream started');
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
  const server = createMainServer(config, tlsFiles, (req, res) => handler(req, res));
  // WebSockets: authenticated like any proxied request; a reload applies to sockets opened after it
  const upgrades = createUpgradeHandler({ config: () => live, sessions, proxy, metrics, log: log.child({ part: 'websocket' }), web, fallback: (req, res) => handler(req, res) });
  server.on('upgrade', upgrades);
  undo.push(() => upgrades.close());
  markLoaded(metrics);
  const { port, url } = await openListener(server, config.server.host, config.server.port, { listener: 'requests', key: 'server.port', scheme: tlsFiles ? 'https' : 'http' }, undo);
  if (config.web?.mpQr) mpEventsUrl = `${url}${config.web.mpQr.eventsPath}`;

  let metricsUrl: string | undefined;
  let metricsServer: http.Server | undefined;
  if (config.metrics.enabled && config.metrics.port !== undefined && opts.listeners?.metrics !== false) {
    metricsServer = createMetricsServer(config.metrics.path, () => metrics.registry.metrics(), metrics.registry.contentType);
    ({ url: metricsUrl } = await openListener(metricsServer, config.metrics.host, config.metrics.port, { listener: 'metrics', key: 'metrics.port' }, undo));
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
    ({ url: adminUrl } = await openListener(adminServer, config.admin.host, config.admin.port, { listener: 'the admin API', key: 'admin.port' }, undo));
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

  const reload = createReloader({
    file: opts.configFile,
    metrics,
    log,
    live: () => live,
    apply: (next) => {
      handler = build(next);
      proxy.prepare(next.routes);
      applyServerLimits(server, next);
      live = next;
    },
    tlsServer: tlsFiles ? (server as unknown as https.Server) : undefined,
  });
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
