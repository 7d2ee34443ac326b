import http, { type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import { parse as parseUrl, type UrlWithStringQuery } from 'node:url';
import httpProxy from 'http-proxy';
import type { Metrics } from '../metrics/metrics.js';
import { errorBody } from '../server/errors.js';
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
  /** sent a second time after a reused keep-alive connection turned out closed */
  retried?: boolean;
  /** the failure was answered and counted already */
  failed?: boolean;
}

/** A reason phrase node can write back (RFC 9112: HTAB, SP, VCHAR, obs-text); others are dropped. */
const REASON = /^[\t\x20-\x7e\x80-\xff]*$/;
const STATE = Symbol('wxgate.proxy');
type WithState = IncomingMessage & { [STATE]?: ProxyState };

/** Safe to send again: an idempotent method and no request body (nothing of it was consumed). */
function bodiless(req: IncomingMessage): boolean {
  const m = req.method;
  if (m !== 'GET' && m !== 'HEAD' && m !== 'OPTIONS' && m !== 'DELETE') return false;
  const len = req.headers['content-length'];
  return req.headers['transfer-encoding'] === undefined && (len === undefined || len === '0');
}

export type UpstreamFailure = 'refused' | 'reset' | 'timeout' | 'other';

function classify(err: NodeJS.ErrnoException, state: ProxyState): UpstreamFailure {
  if (state.timedOut) return 'timeout';
  if (err.code === 'ECONNREFUSED' || err.code === 'EHOSTUNREACH' || err.code === 'ENOTFOUND') return 'refused';
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || err.message === 'socket hang up') return 'reset';
  return 'other';
}

/**
 * Ends an upstream request nobody waits for any more. Its connection cannot be reused mid-response,
 * so it is reset (RST) rather than closed: a close would leave a TIME_WAIT socket behind for every
 * client that leaves early, and thousands of those under load exhaust the port range.
 */
function abortUpstream(proxyReq: ClientRequest | undefined): void {
  if (!proxyReq) return;
  const socket = proxyReq.socket as (typeof proxyReq.socket & { resetAndDestroy?: () => void }) | null;
  if (socket && !socket.destroyed && typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy();
  proxyReq.destroy();
}

/**
 * Reverse proxy over http-proxy with one keep-alive agent per upstream (its default opens a new
 * upstream connection per request). Errors become 502/504 JSON; a client that goes away takes its
 * upstream request with it.
 */
export class Proxy {
  private readonly proxy = withoutDeleteLength(httpProxy.createProxyServer({ xfwd: false, changeOrigin: true, ws: false }));
  private readonly agents = new Map<string, http.Agent>();
  /** Upstream URLs parsed once: http-proxy would url.parse() a string target on every request. */
  private readonly targets = new Map<string, UrlWithStringQuery>();

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
    this.proxy.on('proxyRes', (proxyRes, req: WithState, res: ServerResponse) => {
      const state = req[STATE];
      dropResponseHopByHop(proxyRes.headers);
      if (!state) return;
      if (state.clientWantsClose) proxyRes.headers.connection = 'close';
      // What node cannot write back would throw inside http-proxy's passes and leave the client hanging.
      const status = proxyRes.statusCode ?? 0;
      if (status < 100 || status > 599) {
        proxyRes.destroy();
        this.fail(state, res, 'other', `upstream answered with status ${status}`);
        return;
      }
      if (proxyRes.statusMessage && !REASON.test(proxyRes.statusMessage)) proxyRes.statusMessage = '';
      // An upstream that dies mid-body: the client cannot be given the rest, so its connection is cut
      // (a complete-looking response would be a lie), and the failure is counted.
      proxyRes.once('close', () => {
        if (!proxyRes.complete && !state.failed && !state.timedOut && !state.clientGone) this.fail(state, res, 'reset', 'upstream closed mid-response');
      });
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

  private targetFor(upstream: string): UrlWithStringQuery {
    let target = this.targets.get(upstream);
    if (!target) {
      target = parseUrl(upstream);
      this.targets.set(upstream, target);
    }
    return target;
  }

  /**
   * Hands the request to the upstream; `done` is called once the response is over (finished or aborted).
   * Headers must already be prepared on req.headers.
   */
  forward(req: IncomingMessage, res: ServerResponse, route: Route, clientWantsClose: boolean, done: () => void): void {
    const state: ProxyState = { route, clientGone: false, timedOut: false, clientWantsClose };
    (req as WithState)[STATE] = state;
    res.once('close', () => {
      if (!res.writableFinished) {
        // The client went away: take the upstream request down with it (http-proxy's own abort
        // handling leaks on current Node, its issue #1586).
        state.clientGone = true;
        abortUpstream(state.proxyReq);
      }
      done();
    });
    const send = () =>
      this.proxy.web(req, res, { target: this.targetFor(route.upstream), agent: this.agentFor(route.upstream) }, (err: NodeJS.ErrnoException) => {
        const proxyReq = state.proxyReq;
        proxyReq?.destroy();
        if (state.clientGone) return;
        const kind = classify(err, state);
        // A kept-alive connection the upstream closed just as we reused it: nothing reached the
        // upstream's application, so a request without a body is sent once more on a new one.
        if (kind === 'reset' && proxyReq?.reusedSocket && !state.retried && !res.headersSent && bodiless(req)) {
          state.retried = true;
          this.metrics.upstreamRetries.inc({ route: route.name });
          send();
          return;
        }
        if (state.failed) return;
        this.fail(state, res, kind, err.message, err.code);
      });
    send();
  }

  /** Counts and logs a failed upstream request once; answers 502/504 JSON, or cuts a response already begun. */
  private fail(state: ProxyState, res: ServerResponse, kind: UpstreamFailure, reason: string, errno?: string): void {
    state.failed = true;
    abortUpstream(state.proxyReq);
    const route = state.route.name;
    this.metrics.upstreamErrors.inc({ route, kind });
    // "errno", not "code": the logger redacts any field named code (login codes)
    this.log.warn({ route, kind, errno, err: reason }, 'upstream request failed');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const body = errorBody(kind === 'timeout' ? 'upstream_timeout' : 'upstream_unavailable');
    res.writeHead(kind === 'timeout' ? 504 : 502, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
    });
    res.end(body);
  }

  close(): void {
    for (const agent of this.agents.values()) agent.destroy();
    this.agents.clear();
    this.proxy.close();
  }
}

/**
 * http-proxy's `deleteLength` step sets `Content-Length: 0` on a DELETE or OPTIONS without one and drops
 * its Transfer-Encoding, yet still streams the chunked body: the upstream would read that body as a second,
 * unauthenticated request (smuggling). Without the step the request is forwarded as it was framed.
 */
function withoutDeleteLength(server: httpProxy): httpProxy {
  const s = server as httpProxy & { webPasses: Array<{ name: string }> };
  s.webPasses = s.webPasses.filter((pass) => pass.name !== 'deleteLength');
  return server;
}
