import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * The gateway's one registry. Each part records its own series through this object; labels are
 * bounded sets only (route names, endpoint names, error codes), never raw paths, tokens or openids.
 */
export function createMetrics(opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'wxgate_' });
  const tokenFetchedAt = new Map<string, number>();
  const cacheSizes = new Map<string, () => number>();
  const upstreamTargets = new Map<string, () => boolean>();
  const latencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
  return {
    registry,
    requests: new Counter({
      name: 'wxgate_http_requests_total',
      help: 'Requests answered, by route name (or the gateway endpoint), method and status.',
      labelNames: ['route', 'method', 'status'] as const,
      registers: [registry],
    }),
    requestDuration: new Histogram({
      name: 'wxgate_http_request_duration_seconds',
      help: 'Time from request to the last byte of the response, by route name and method.',
      labelNames: ['route', 'method'] as const,
      buckets: latencyBuckets,
      registers: [registry],
    }),
    logins: new Counter({
      name: 'wxgate_logins_total',
      help: 'Logins by result: ok, or the error code answered.',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    loginReplays: new Counter({
      name: 'wxgate_login_code_replays_total',
      help: 'Logins answered without a WeChat call because the code was already being or had been exchanged: inflight (same process), pending (another replica), store (remembered answer).',
      labelNames: ['source'] as const,
      registers: [registry],
    }),
    wechatRequests: new Counter({
      name: 'wxgate_wechat_requests_total',
      help: 'Calls to the WeChat API by api and outcome (ok, errcode_<n>, timeout, network, bad_response).',
      labelNames: ['api', 'outcome'] as const,
      registers: [registry],
    }),
    wechatDuration: new Histogram({
      name: 'wxgate_wechat_request_duration_seconds',
      help: 'Latency of calls to the WeChat API by api.',
      labelNames: ['api'] as const,
      buckets: latencyBuckets,
      registers: [registry],
    }),
    sessionLookups: new Counter({
      name: 'wxgate_session_lookups_total',
      help: 'Session token checks by where they were answered: lru, store, negative (a token the store recently did not know), miss (no such session), error (store unavailable).',
      labelNames: ['source'] as const,
      registers: [registry],
    }),
    sessionStoreErrors: new Counter({
      name: 'wxgate_session_store_errors_total',
      help: 'Session store operations that failed (store down, slow or refusing), by operation.',
      labelNames: ['op'] as const,
      registers: [registry],
    }),
    sessionStoreUp: new Gauge({
      name: 'wxgate_session_store_up',
      // server.workers > 1: how the workers' values are combined in /metrics (prom-client's AggregatorRegistry)
      aggregator: 'min',
      help: '1 while the session store answers, 0 while it does not.',
      registers: [registry],
    }),
    wechatTokenRefreshes: new Counter({
      name: 'wxgate_wechat_token_refreshes_total',
      help: 'access_token fetches by appid and outcome: ok, forced (force_refresh), external (read from the external source), error.',
      labelNames: ['appid', 'outcome'] as const,
      registers: [registry],
    }),
    /** appid → when the token in use was fetched (ms since epoch); read at scrape time. */
    wechatTokenFetchedAt: tokenFetchedAt,
    wechatTokenAge: new Gauge({
      name: 'wxgate_wechat_token_age_seconds',
      // server.workers > 1: how the workers' values are combined in /metrics (prom-client's AggregatorRegistry)
      aggregator: 'max',
      help: 'Seconds since the access_token this replica uses was fetched from WeChat (by any replica), by appid.',
      labelNames: ['appid'] as const,
      registers: [registry],
      collect() {
        this.reset();
        const now = Date.now();
        for (const [appid, at] of tokenFetchedAt) this.set({ appid }, Math.max(0, (now - at) / 1000));
      },
    }),
    mpPushes: new Counter({
      name: 'wxgate_mp_pushes_total',
      help: 'Official Account message pushes to the server URL (web.mpQr), by outcome: login, ignored, resent, or the refusal.',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    rateLimited: new Counter({
      name: 'wxgate_rate_limited_total',
      help: 'Requests refused with 429 rate_limited by the gateway\'s own limits, by endpoint.',
      labelNames: ['endpoint'] as const,
      registers: [registry],
    }),
    /** cache name → its current size; read at scrape time (set by Sessions). */
    sessionCacheSizes: cacheSizes,
    sessionCacheEntries: new Gauge({
      name: 'wxgate_session_cache_entries',
      help: 'Entries held in this replica\'s session caches: live (sessions) and negative (tokens the store did not know).',
      labelNames: ['cache'] as const,
      registers: [registry],
      collect() {
        for (const [cache, size] of cacheSizes) this.set({ cache }, size());
      },
    }),
    configReloadSuccess: new Gauge({
      name: 'wxgate_config_last_reload_success',
      // server.workers > 1: how the workers' values are combined in /metrics (prom-client's AggregatorRegistry)
      aggregator: 'min',
      help: 'Whether the last configuration (re)load succeeded (1) or was rejected (0, the previous configuration keeps serving).',
      registers: [registry],
    }),
    configReloadTimestamp: new Gauge({
      name: 'wxgate_config_last_reload_success_timestamp_seconds',
      // server.workers > 1: how the workers' values are combined in /metrics (prom-client's AggregatorRegistry)
      aggregator: 'min',
      help: 'When the configuration in force was loaded (start or the last successful reload), seconds since the epoch.',
      registers: [registry],
    }),
    upstreamRetries: new Counter({
      name: 'wxgate_upstream_retries_total',
      help: 'Requests without a body sent again: on a new connection when the kept-alive one they were given had just been closed by the upstream, or to the next target when their target refused the connection.',
      labelNames: ['route'] as const,
      registers: [registry],
    }),
    upstreamErrors: new Counter({
      name: 'wxgate_upstream_errors_total',
      help: 'Proxied requests that failed, by route name and kind (refused, reset, timeout, other).',
      labelNames: ['route', 'kind'] as const,
      registers: [registry],
    }),
    /** "route\ntarget" → whether that target takes requests now; read at scrape time (set by the proxy). */
    upstreamTargets: upstreamTargets,
    upstreamTargetUp: new Gauge({
      name: 'wxgate_upstream_target_up',
      // server.workers > 1: how the workers' values are combined in /metrics (prom-client's AggregatorRegistry)
      aggregator: 'min',
      help: 'Per route and upstream target (host:port): 1 while it takes requests, 0 while it is skipped because its connection failed (for routes[].failTimeout).',
      labelNames: ['route', 'target'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [key, up] of upstreamTargets) {
          const nl = key.indexOf('\n');
          this.set({ route: key.slice(0, nl), target: key.slice(nl + 1) }, up() ? 1 : 0);
        }
      },
    }),
    websocketsOpen: new Gauge({
      name: 'wxgate_websockets_open',
      help: 'WebSocket connections open through the gateway, by route name.',
      labelNames: ['route'] as const,
      registers: [registry],
    }),
    events: new Counter({
      name: 'wxgate_events_total',
      help: 'Login events (events.url), by type and outcome: delivered, rejected (a 4xx other than 408/429), gave_up (events.attempts failed), dropped_queue_full, dropped_shutdown, or queued.',
      labelNames: ['type', 'outcome'] as const,
      registers: [registry],
    }),
    eventDeliveries: new Counter({
      name: 'wxgate_event_deliveries_total',
      help: 'Login event delivery attempts, by outcome: ok, http_4xx, http_5xx, timeout, network.',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    eventsPending: new Gauge({
      name: 'wxgate_events_pending',
      help: 'Login events waiting in this replica (new, in flight or waiting to be retried).',
      registers: [registry],
    }),
    websocketClosures: new Counter({
      name: 'wxgate_websocket_closures_total',
      help: 'WebSocket connections closed, by route name and reason: client, upstream, session_ended (revoked or expired), max_lifetime, shutdown, error.',
      labelNames: ['route', 'reason'] as const,
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
