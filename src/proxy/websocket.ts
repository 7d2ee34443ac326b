import { randomBytes } from 'node:crypto';
import http, { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import proxyaddr from 'proxy-addr';
import type { Config } from '../config/schema.js';
import type { Metrics } from '../metrics/metrics.js';
import { requestId } from '../base/access-log.js';
import { ownEndpointMatcher } from '../server/app.js';
import { GatewayError, unauthorized } from '../base/errors.js';
import { refuseOnSocket } from '../base/error-answer.js';
import type { Logger } from '../base/logger.js';
import type { ActiveSession, Sessions } from '../session/sessions.js';
import type { Invalidation } from '../session/types.js';
import { bearerOnly, type WebContext } from '../web/context.js';
import { stripOwnCookies } from '../request/cookies.js';
import { checkHost, dropHopByHop, peerTrusted, responseHeaders, setForwarded, setIdentity, stripClientHeaders, stripCredentials } from './headers.js';
import { checkPath } from './path.js';
import type { Proxy } from './proxy.js';
import { RouteTable, type Route } from './routes.js';
import type { Target } from './upstreams.js';

/**
 * WebSockets (wx.connectSocket, browsers' `new WebSocket`) through the gateway, for the server's
 * 'upgrade' event. An upgrade goes the way of any proxied request: path check → route → session
 * (Bearer, or the session cookie from an allowed Origin) → routes[].apps → header steps (hop-by-hop
 * and the client's identity headers out, X-Openid/-Unionid/-Appid and X-Forwarded-* in, the route's
 * headers) → a raw upgrade to the route's next target. On 101 the two sockets are joined; any other
 * answer goes back to the client and the connection closes. Refusals are plain HTTP/1.1 answers with
 * the JSON `{ error, message }` body, the connection closed after.
 *
 * An open socket lives no longer than its session: a revocation anywhere (the store's invalidations)
 * and a check of every socket's session every `checkInterval` close it, as do routes[].websocket
 * .maxLifetime and the session's absolute deadline. The gateway closes a socket with a close frame to
 * each side, put in between two frames (it follows the frame boundaries of both directions, nothing
 * more): 4401 "session ended" (log in again), 1001 "maximum lifetime reached" or "gateway shutting down"
 * (reconnect). An open socket does not extend its session's idle lifetime (reconnecting does).
 *
 * Upgrades that are not WebSocket ones (h2c) and upgrades to the gateway's own endpoints are answered
 * by the HTTP handler as plain requests, without the upgrade, and their connection is closed after.
 */
export interface UpgradeDeps {
  /** the configuration in force, read per upgrade (a reload applies to sockets opened after it) */
  config: () => Config;
  sessions: Sessions;
  proxy: Proxy;
  metrics: Metrics;
  log: Logger;
  web?: WebContext;
  /** the server's request handler, for upgrades answered as plain requests */
  fallback: (req: IncomingMessage, res: ServerResponse) => void;
  /** how often every open socket's session is checked in the store; default 30 s */
  checkInterval?: number;
  /** how long a closing socket's peers get to close their side before it is cut; default 2 s */
  closeGrace?: number;
}

export interface UpgradeHandler {
  (req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** WebSockets open now */
  readonly open: number;
  /** Closes every open WebSocket (1001 to both sides) and refuses new upgrades; resolves once they are closed. */
  close(): Promise<void>;
}

type Reason = 'client' | 'upstream' | 'session_ended' | 'max_lifetime' | 'shutdown' | 'error';

const CLOSE: Record<'session_ended' | 'max_lifetime' | 'shutdown', [number, string]> = {
  session_ended: [4401, 'session ended'],
  max_lifetime: [1001, 'maximum lifetime reached'],
  shutdown: [1001, 'gateway shutting down'],
};

const noop = () => {};

/** Whether an upgrade request asks for a WebSocket (RFC 6455 4.1: GET, Upgrade names "websocket"). */
function isWebSocket(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade;
  return req.method === 'GET' && upgrade !== undefined && upgrade.split(',').some((p) => p.trim().toLowerCase() === 'websocket');
}

function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (len !== undefined && len !== '0');
}

/** A close frame (RFC 6455 5.5.1); masked when the gateway sends it as the client (to the upstream). */
export function closeFrame(code: number, reason: string, mask: boolean): Buffer {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2);
  const head = Buffer.from([0x88, (mask ? 0x80 : 0) | payload.length]);
  if (!mask) return Buffer.concat([head, payload]);
  const key = randomBytes(4);
  for (let i = 0; i < payload.length; i++) payload[i]! ^= key[i & 3]!;
  return Buffer.concat([head, key, payload]);
}

/**
 * Follows the frame boundaries of one direction of a WebSocket: reads each frame's header (2 to 14
 * bytes) and skips its payload, nothing else (no unmasking, no buffering), so that a close frame can be
 * put in between two frames.
 */
export class FrameCursor {
  /** payload bytes of the current frame still to come */
  private left = 0;
  private readonly head = Buffer.alloc(14);
  private have = 0;
  private need = 2;

  get atBoundary(): boolean {
    return this.left === 0 && this.have === 0;
  }

  /**
   * Moves over `chunk`. With `stop`, returns the offset just after the first frame that ends within
   * it (the bytes up to there can go on, then a frame of the gateway's); otherwise, or when none ends
   * in it, -1.
   */
  advance(chunk: Buffer, stop = false): number {
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      if (this.left > 0) {
        const take = Math.min(this.left, n - i);
        this.left -= take;
        i += take;
        if (this.left === 0 && stop) return i;
        continue;
      }
      this.head[this.have++] = chunk[i++]!;
      if (this.have === 2) {
        const b1 = this.head[1]!;
        const len7 = b1 & 127;
        this.need = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (b1 & 128 ? 4 : 0);
      }
      if (this.have >= 2 && this.have === this.need) {
        const len7 = this.head[1]! & 127;
        this.left = len7 === 126 ? this.head.readUInt16BE(2) : len7 === 127 ? Number(this.head.readBigUInt64BE(2)) : len7;
        this.have = 0;
        this.need = 2;
        if (this.left === 0 && stop) return i;
      }
    }
    return -1;
  }
}

/** One direction of a tunnel: src's bytes to dst, with backpressure, until a close frame of the gateway's. */
class Pipe {
  private readonly frames = new FrameCursor();
  private closing: Buffer | undefined;
  /** the gateway's close frame went out: nothing more is passed on */
  done = false;

  constructor(
    private readonly src: Socket,
    private readonly dst: Socket,
  ) {
    src.on('data', (chunk: Buffer) => this.data(chunk));
    dst.on('drain', () => src.resume());
  }

  data(chunk: Buffer): void {
    if (this.done || chunk.length === 0) return;
    if (this.closing) {
      const end = this.frames.advance(chunk, true);
      if (end < 0) {
        this.dst.write(chunk);
        return;
      }
      if (end > 0) this.dst.write(chunk.subarray(0, end));
      this.finish();
      return;
    }
    this.frames.advance(chunk);
    if (!this.dst.write(chunk)) this.src.pause();
  }

  /** Sends `frame` at the next frame boundary (now, when between two frames), then ends dst. */
  closeWith(frame: Buffer): void {
    if (this.done || this.closing) return;
    this.closing = frame;
    if (this.frames.atBoundary) this.finish();
    else this.src.resume();
  }

  private finish(): void {
    this.done = true;
    if (this.dst.writable) this.dst.end(this.closing!);
  }
}

interface Compiled {
  config: Config;
  routes: RouteTable;
  isOwn: (url: string) => boolean;
  allowedApps: Map<Route, Set<string>>;
  trust: (addr: string, i: number) => boolean;
}

/** An open WebSocket: the client's socket joined to the upstream's. */
interface Tunnel {
  route: string;
  tokenHash: string | undefined;
  client: Socket;
  upstream: Socket;
  toClient: Pipe;
  toUpstream: Pipe;
  reason: Reason | undefined;
  closed: number;
  timer: NodeJS.Timeout | undefined;
  grace: NodeJS.Timeout | undefined;
  close(reason: 'session_ended' | 'max_lifetime' | 'shutdown'): void;
}

export function createUpgradeHandler(deps: UpgradeDeps): UpgradeHandler {
  const { sessions, proxy, metrics, log, web } = deps;
  const credentials = web?.credentials ?? bearerOnly;
  const ownCookies = web?.cookies.names;
  const checkInterval = deps.checkInterval ?? 30_000;
  const closeGrace = deps.closeGrace ?? 2_000;
  const tunnels = new Set<Tunnel>();
  const byHash = new Map<string, Set<Tunnel>>();
  let closed = false;
  let idle: (() => void) | undefined;

  let compiled: Compiled | undefined;
  const current = (): Compiled => {
    const config = deps.config();
    if (compiled?.config !== config) {
      const routes = new RouteTable(config.routes);
      proxy.prepare(config.routes);
      compiled = {
        config,
        routes,
        isOwn: ownEndpointMatcher(config),
        allowedApps: new Map(routes.all.filter((r) => r.apps).map((r) => [r, new Set(r.apps)] as const)),
        trust: proxyaddr.compile([...config.server.trustedProxies]),
      };
    }
    return compiled;
  };
  current();

  // ---- sessions: a revoked or expired session's sockets are closed

  let storeFailing = false;
  const recheck = (hashes: Iterable<string>) => {
    for (const h of hashes) {
      if (!byHash.has(h)) continue;
      sessions.store.get(h).then(
        (record) => {
          storeFailing = false;
          const now = Date.now();
          if (record && now < record.idleExpiresAt && now < record.expiresAt) return;
          for (const t of byHash.get(h) ?? []) t.close('session_ended');
        },
        (err: unknown) => {
          // the store cannot say: sockets stay open until it can (as cached sessions keep serving)
          if (!storeFailing) log.warn({ err: (err as Error).message }, 'cannot check the sessions of open WebSockets (session store unavailable)');
          storeFailing = true;
        },
      );
    }
  };
  sessions.store.onInvalidate((inv: Invalidation) => {
    if (closed || byHash.size === 0) return;
    recheck(inv === 'all' ? [...byHash.keys()] : inv);
  });
  const sweep = setInterval(() => recheck([...byHash.keys()]), checkInterval);
  sweep.unref();

  // ---- answers

  const record = (route: string, status: number, start: bigint) => {
    metrics.requests.inc({ route, method: 'GET', status: String(status) });
    metrics.requestDuration.observe({ route, method: 'GET' }, Number(process.hrtime.bigint() - start) / 1e9);
  };

  /** A refused upgrade: a plain HTTP/1.1 answer with `{ error, message }`, the connection closed after. */
  const refuse = (socket: Duplex, err: unknown, route: string, start: bigint) => {
    const g = refuseOnSocket(socket, err, log, route);
    record(route, g.status, start);
    if (!socket.destroyed) setTimeout(() => socket.destroy(), closeGrace).unref();
  };

  /** An upgrade answered as a plain request by the HTTP handler (no upgrade), its connection closed after. */
  const asPlainRequest = (req: IncomingMessage, socket: Socket, start: bigint) => {
    // the parser stopped at the head: a body would not reach the handler
    if (hasBody(req)) return refuse(socket, new GatewayError('bad_request', { message: 'An Upgrade request with a body is not served.' }), 'unmatched', start);
    const res = new http.ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket);
    res.once('finish', () => {
      socket.end();
      setTimeout(() => socket.destroy(), closeGrace).unref();
    });
    deps.fallback(req, res);
  };

  // ---- tunnels

  const open = (req: IncomingMessage, client: Socket, head: Buffer, route: Route, session: ActiveSession | undefined, start: bigint) => {
    const targets = proxy.targets(route);
    const path = targets.pathFor(req.url!);
    const headers = req.headers;
    stripCredentials(headers);
    if (ownCookies) stripOwnCookies(headers, ownCookies);
    setForwarded(req, peerTrusted(req, current().trust));
    if (session) setIdentity(headers, session, route.forwardPhone);
    if (targets.headers) for (const [name, value] of targets.headers) headers[name] = value;
    delete headers.host; // the upstream's Host; the client's is in X-Forwarded-Host
    headers.connection = 'Upgrade';
    headers.upgrade = 'websocket';

    let failedOver = false;
    const attempt = (target: Target) => {
      let answered = false;
      const up = (target.secure ? https : http).request({
        host: target.hostname,
        port: target.port,
        method: 'GET',
        path,
        headers,
        agent: false,
        timeout: route.timeout,
      });
      const clientGone = () => up.destroy();
      client.once('close', clientGone);
      up.on('timeout', () => {
        const connecting = up.socket?.connecting ?? true;
        up.destroy(Object.assign(new Error('upstream upgrade timed out'), { code: connecting ? 'ECONNTIMEOUT' : 'ETIMEDOUT' }));
      });
      up.on('error', (err: Error & { code?: string }) => {
        client.off('close', clientGone);
        if (answered || client.destroyed) return;
        answered = true;
        const code = err.code ?? '';
        const connectFailed = ['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNTIMEOUT'].includes(code);
        if (connectFailed || code === 'ECONNRESET' || code === 'EPIPE') proxy.targetFailed(targets, target, connectFailed ? 'refused' : 'reset');
        // no connection, nothing reached the upstream: the upgrade (never with a body) goes to the next target once
        if (connectFailed && !failedOver) {
          const next = targets.pick(target);
          if (next) {
            failedOver = true;
            metrics.upstreamRetries.inc({ route: route.name });
            return attempt(next);
          }
        }
        const timeout = code === 'ECONNTIMEOUT' || code === 'ETIMEDOUT';
        const kind = timeout ? 'timeout' : connectFailed ? 'refused' : code === 'ECONNRESET' || code === 'EPIPE' ? 'reset' : 'other';
        metrics.upstreamErrors.inc({ route: route.name, kind });
        log.warn({ route: route.name, target: target.label, kind, errno: code, err: err.message }, 'upstream WebSocket upgrade failed');
        refuse(client, new GatewayError(timeout ? 'upstream_timeout' : 'upstream_unavailable'), route.name, start);
      });
      // any answer but 101: passed back as it is, then the connection closes
      up.on('response', (res) => {
        client.off('close', clientGone);
        answered = true;
        targets.answered(target);
        record(route.name, res.statusCode!, start);
        const out = responseHeaders(res.rawHeaders as unknown as Buffer[], true, ownCookies);
        const reason = res.statusMessage && /^[\t\x20-\x7e\x80-\xff]*$/.test(res.statusMessage) ? res.statusMessage : (STATUS_CODES[res.statusCode!] ?? '');
        let text = `HTTP/1.1 ${res.statusCode} ${reason}\r\n`;
        for (let i = 0; i < out.length; i += 2) text += `${out[i]}: ${out[i + 1]}\r\n`;
        client.write(Buffer.from(`${text}\r\n`, 'latin1'));
        res.on('data', (c: Buffer) => client.write(c));
        res.on('end', () => client.end());
        res.on('error', () => client.destroy());
        setTimeout(() => client.destroy(), route.timeout).unref();
      });
      up.on('upgrade', (res, upSocket: Socket, upHead: Buffer) => {
        client.off('close', clientGone);
        answered = true;
        targets.answered(target);
        upSocket.setTimeout(0);
        if (client.destroyed || closed) {
          upSocket.destroy();
          if (!client.destroyed) refuse(client, new GatewayError('not_ready', { message: 'The gateway is shutting down; connect again.' }), route.name, start);
          return;
        }
        record(route.name, 101, start);
        const out = responseHeaders(res.rawHeaders as unknown as Buffer[], false, ownCookies);
        let text = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n';
        for (let i = 0; i < out.length; i += 2) text += `${out[i]}: ${out[i + 1]}\r\n`;
        client.write(Buffer.from(`${text}\r\n`, 'latin1'));
        join(route, session, client, upSocket, head, upHead);
      });
      up.end();
    };
    attempt(targets.single ?? targets.pick()!);
  };

  const join = (route: Route, session: ActiveSession | undefined, client: Socket, upstream: Socket, head: Buffer, upHead: Buffer) => {
    for (const s of [client, upstream]) {
      s.setTimeout(0);
      s.setNoDelay(true);
      s.setKeepAlive(true, 30_000);
    }
    const t: Tunnel = {
      route: route.name,
      tokenHash: session?.tokenHash,
      client,
      upstream,
      toClient: new Pipe(upstream, client),
      toUpstream: new Pipe(client, upstream),
      reason: undefined,
      closed: 0,
      timer: undefined,
      grace: undefined,
      close(reason) {
        if (t.reason) return;
        t.reason = reason;
        clearTimeout(t.timer);
        const [code, text] = CLOSE[reason];
        t.toClient.closeWith(closeFrame(code, text, false));
        t.toUpstream.closeWith(closeFrame(code, text, true));
        windDown();
      },
    };
    /** The tunnel is ending: whatever of it is still open after closeGrace is cut. */
    const windDown = () => {
      if (t.grace) return;
      t.grace = setTimeout(() => {
        client.destroy();
        upstream.destroy();
      }, closeGrace);
      t.grace.unref();
    };
    tunnels.add(t);
    if (t.tokenHash) {
      let set = byHash.get(t.tokenHash);
      if (!set) byHash.set(t.tokenHash, (set = new Set()));
      set.add(t);
    }
    metrics.websocketsOpen.inc({ route: route.name });
    // the socket ends with routes[].websocket.maxLifetime, or with the session's absolute deadline if sooner
    const maxLifetime = route.websocket?.maxLifetime ?? 3_600_000;
    const sessionLeft = session ? session.expiresAt - Date.now() : Infinity;
    const after = Math.max(0, Math.min(maxLifetime, sessionLeft));
    t.timer = setTimeout(() => t.close(sessionLeft < maxLifetime ? 'session_ended' : 'max_lifetime'), after);
    t.timer.unref();

    // one side sent FIN: so does the gateway to the other; a peer that does not finish its side in time is cut
    const ended = (side: 'client' | 'upstream') => {
      t.reason ??= side;
      const other = side === 'client' ? upstream : client;
      const pipe = side === 'client' ? t.toUpstream : t.toClient;
      if (!pipe.done && other.writable) other.end();
      windDown();
    };
    client.on('end', () => ended('client'));
    upstream.on('end', () => ended('upstream'));
    const gone = (side: 'client' | 'upstream') => {
      t.reason ??= side;
      const other = side === 'client' ? upstream : client;
      if (!other.destroyed) {
        other.end();
        windDown();
      }
      if (++t.closed < 2) return;
      clearTimeout(t.timer);
      clearTimeout(t.grace);
      tunnels.delete(t);
      if (t.tokenHash) {
        const set = byHash.get(t.tokenHash);
        set?.delete(t);
        if (set?.size === 0) byHash.delete(t.tokenHash);
      }
      metrics.websocketsOpen.dec({ route: route.name });
      metrics.websocketClosures.inc({ route: route.name, reason: t.reason });
      if (tunnels.size === 0) idle?.();
    };
    client.once('close', () => gone('client'));
    upstream.once('close', () => gone('upstream'));
    client.on('error', noop);
    upstream.on('error', (err: Error) => {
      t.reason ??= 'upstream';
      log.debug({ route: route.name, err: err.message }, 'upstream WebSocket connection error');
    });

    // bytes that came with the heads: the client's first frames, the upstream's first frames
    if (head.length) t.toUpstream.data(head);
    if (upHead.length) t.toClient.data(upHead);
  };

  const handler = function upgrade(req: IncomingMessage, duplex: Duplex, head: Buffer): void {
    const socket = duplex as Socket;
    socket.on('error', noop);
    const start = process.hrtime.bigint();
    let routeName = 'unmatched';
    const fail = (err: unknown) => refuse(socket, err, routeName, start);
    try {
      if (closed) throw new GatewayError('not_ready', { message: 'The gateway is shutting down; connect again.' });
      checkHost(req);
      const c = current();
      if (!isWebSocket(req) || c.isOwn(req.url ?? '')) return asPlainRequest(req, socket, start);
      const checked = checkPath(req.url ?? '');
      if (!checked.ok) throw new GatewayError('bad_path', { detail: { reason: checked.reason } });
      const route = c.routes.match(checked.matchKey);
      if (!route) throw new GatewayError('not_found');
      routeName = route.name;
      const id = requestId(req.headers);
      const headers = req.headers;
      dropHopByHop(headers);
      // again after the hop-by-hop step: a Connection header naming it cannot drop it
      headers['x-request-id'] = id;
      stripClientHeaders(headers, peerTrusted(req, c.trust));
      if (route.auth !== 'required') return open(req, socket, head, route, undefined, start);

      const { token, via, given } = credentials.of(req);
      if (!token) throw unauthorized(given);
      // GET passes csrfOk, yet any site's page can open a WebSocket with the user's cookie: its Origin must be ours
      if (via === 'cookie' && !credentials.originAllowed(req)) {
        throw new GatewayError('csrf_failed', { message: 'A WebSocket opened with the session cookie must come from an allowed page (Origin: web.publicUrl or one of web.origins).' });
      }
      const allowed = route.apps && c.allowedApps.get(route);
      const verified = (session: ActiveSession | undefined): ActiveSession => {
        if (!session) throw unauthorized(true);
        if (allowed && !allowed.has(session.appid)) throw new GatewayError('app_not_allowed');
        return session;
      };
      const found = sessions.authenticate(token);
      if (!(found instanceof Promise)) return open(req, socket, head, route, verified(found), start);
      found
        .then((session) => {
          const s = verified(session);
          if (!socket.destroyed) open(req, socket, head, route, s, start);
        })
        .catch(fail);
    } catch (err) {
      fail(err);
    }
  } as UpgradeHandler;

  Object.defineProperty(handler, 'open', { get: () => tunnels.size });
  handler.close = () => {
    closed = true;
    clearInterval(sweep);
    if (tunnels.size === 0) return Promise.resolve();
    const done = new Promise<void>((resolve) => (idle = resolve));
    for (const t of tunnels) t.close('shutdown');
    return done;
  };
  return handler;
}
