import http, { type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import httpProxy from 'http-proxy';
import type { Metrics } from '../metrics/metrics.js';
import { errorBody, type ErrorCode } from '../server/errors.js';
import { dropResponseHopByHop } from './headers.js';
import type { Route } from './routes.js';

interface Logger {
  warn(obj: object, msg: string): void;
}

/** What one proxied request needs to remember; kept on the request under a symbol. */
interface ProxyState {
  route: Route;
  proxyReq?: ClientRequest;
  clientGone: boolean;
  timedOut: boolean;
  clientWantsClose: boolean;
}
const STATE = Symbol('wxgate.proxy');
type WithState = IncomingMessage & { [STATE]?: ProxyState };

export type UpstreamFailure = 'refused' | 'reset' | 'timeout' | 'other';

function classify(err: NodeJS.ErrnoException, state: ProxyState): UpstreamFailure {
  if (state.timedOut) return 'timeout';
  if (err.code === 'ECONNREFUSED' || err.code === 'EHOSTUNREACH' || err.code === 'ENOTFOUND') return 'refused';
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || err.message === 'socket hang up') return 'reset';
  return 'other';
}

/**
 * Reverse proxy over http-proxy with one keep-alive agent per upstream (its default opens a new
 * upstream connection per request). Errors become 502/504 JSON; a client that goes away takes its
 * upstream request with it.
 */
export class Proxy {
  private readonly proxy = httpProxy.createProxyServer({ xfwd: false, changeOrigin: true, ws: false });
  private readonly agents = new Map<string, http.Agent>();

  constructor(
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {
    this.proxy.on('proxyReq', (proxyReq, req: WithState) => {
      const state = req[STATE];
      if (!state) return;
      state.proxyReq = proxyReq;
      if (state.clientGone) {
        proxyReq.destroy();
        return;
      }
      proxyReq.setTimeout(state.route.timeout, () => {
        state.timedOut = true;
        proxyReq.destroy(Object.assign(new Error('upstream timed out'), { code: 'ETIMEDOUT' }));
      });
    });
    this.proxy.on('proxyRes', (proxyRes, req: WithState) => {
      dropResponseHopByHop(proxyRes.headers);
      if (req[STATE]?.clientWantsClose) proxyRes.headers.connection = 'close';
    });
    // Without a listener http-proxy would throw; every web() call has its own callback anyway.
    this.proxy.on('error', () => {});
  }

  private agentFor(upstream: string): http.Agent {
    let agent = this.agents.get(upstream);
    if (!agent) {
      const opts = { keepAlive: true, maxSockets: 512, maxFreeSockets: 256, scheduling: 'lifo' as const, timeout: 60_000 };
      agent = upstream.startsWith('https:') ? new https.Agent(opts) : new http.Agent(opts);
      this.agents.set(upstream, agent);
    }
    return agent;
  }

  /**
   * Hands the request to the upstream and resolves when the response is over (finished or aborted).
   * Headers must already be prepared on req.headers.
   */
  forward(req: IncomingMessage, res: ServerResponse, route: Route, clientWantsClose: boolean): Promise<void> {
    const state: ProxyState = { route, clientGone: false, timedOut: false, clientWantsClose };
    (req as WithState)[STATE] = state;
    return new Promise<void>((resolve) => {
      res.once('close', () => {
        if (!res.writableFinished) {
          // The client went away: take the upstream request down with it (http-proxy's own abort
          // handling leaks on current Node, its issue #1586).
          state.clientGone = true;
          state.proxyReq?.destroy();
        }
        resolve();
      });
      this.proxy.web(req, res, { target: route.upstream, agent: this.agentFor(route.upstream) }, (err: NodeJS.ErrnoException) => {
        state.proxyReq?.destroy();
        if (state.clientGone) return;
        const kind = classify(err, state);
        this.metrics.upstreamErrors.inc({ route: route.name, kind });
        this.log.warn({ route: route.name, kind, code: err.code, err: err.message }, 'upstream request failed');
        if (res.headersSent) {
          res.destroy();
          return;
        }
        const code: ErrorCode = kind === 'timeout' ? 'upstream_timeout' : 'upstream_unavailable';
        const body = errorBody(code);
        res.writeHead(kind === 'timeout' ? 504 : 502, {
          'content-type': 'application/json; charset=utf-8',
          'content-length': Buffer.byteLength(body),
          'cache-control': 'no-store',
        });
        res.end(body);
      });
    });
  }

  close(): void {
    for (const agent of this.agents.values()) agent.destroy();
    this.agents.clear();
    this.proxy.close();
  }
}
