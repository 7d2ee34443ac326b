import http, { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Config } from '../config/schema.js';
import { GatewayError } from '../base/errors.js';
import { refuseOnSocket } from '../base/error-answer.js';
import type { Logger } from '../base/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import { ownEndpointMatcher } from '../endpoints/match.js';
import type { Sessions } from '../session/sessions.js';
import { bearerOnly, type WebContext } from '../web/context.js';
import { Admission, admit, type Gate } from './admission/admission.js';
import { gateOf } from './admission/gate.js';
import { finisher, type Finish } from './admission/record.js';
import { responseHeaders } from './headers.js';
import type { Proxy } from './proxy.js';
import { sendUpgrade } from './ws-upstream.js';
import { Tunnels } from './ws-tunnels.js';

export { closeFrame, FrameCursor } from './ws-frames.js';

/**
 * WebSockets (wx.connectSocket, browsers' `new WebSocket`) through the gateway, for the server's
 * 'upgrade' event. An upgrade goes through the same admission as any proxied request
 * (proxy/admission/steps.ts; a cookie session must come from an allowed Origin), then to the route's
 * next target (./ws-upstream.ts). On 101 the two sockets are joined (./ws-tunnels.ts: the socket lives
 * no longer than its session); any other answer goes back to the client and the connection closes.
 * Refusals are plain HTTP/1.1 answers with the JSON `{ error, message }` body, the connection closed
 * after. Every upgrade is recorded as a request (metrics, access log) once it is answered.
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

const noop = () => {};
const REASON = /^[\t\x20-\x7e\x80-\xff]*$/;

/** Whether an upgrade request asks for a WebSocket (RFC 6455 4.1: GET, Upgrade names "websocket"). */
function isWebSocket(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade;
  return req.method === 'GET' && upgrade !== undefined && upgrade.split(',').some((p) => p.trim().toLowerCase() === 'websocket');
}

function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (len !== undefined && len !== '0');
}

/** An upstream's answer's status line and headers as the client gets them (the connection closes after a non-101). */
function answerHead(status: number, statusText: string, rawHeaders: Buffer[], ownCookies: ReadonlySet<string> | undefined): string {
  const out = responseHeaders(rawHeaders, status !== 101, ownCookies);
  let text = status === 101 ? 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' : `HTTP/1.1 ${status} ${statusText && REASON.test(statusText) ? statusText : (STATUS_CODES[status] ?? '')}\r\n`;
  for (let i = 0; i < out.length; i += 2) text += `${out[i]}: ${out[i + 1]}\r\n`;
  return `${text}\r\n`;
}

/** The state of one upgrade beyond admission's: its socket and the bytes that came with its head. */
interface Upgrade extends Admission {
  socket?: Socket;
  head?: Buffer;
}

export function createUpgradeHandler(deps: UpgradeDeps): UpgradeHandler {
  const { sessions, proxy, metrics, log, web } = deps;
  const ownCookies = web?.cookies.names;
  const closeGrace = deps.closeGrace ?? 2_000;
  const tunnels = new Tunnels(sessions, metrics, log, deps.checkInterval ?? 30_000, closeGrace);
  let closed = false;

  /** A refused upgrade: a plain HTTP/1.1 answer with `{ error, message }`, the connection closed after. */
  const refuse = (u: Upgrade, err: unknown) => {
    const socket = u.socket!;
    const g = refuseOnSocket(socket, err, log, u.routeName);
    finish(u, g.status);
    if (!socket.destroyed) setTimeout(() => socket.destroy(), closeGrace).unref();
  };

  const admitted = (u: Upgrade) => {
    const client = u.socket!;
    if (client.destroyed) return;
    const route = u.matched;
    const targets = proxy.targets(route);
    const headers = u.req.headers;
    if (targets.headers) for (const [name, value] of targets.headers) headers[name] = value;
    headers.host = undefined; // the upstream's Host; the client's is in X-Forwarded-Host (not deleted: headers.ts dropHopByHop says why)
    const path = targets.pathFor(u.req.url!);
    sendUpgrade({ proxy, metrics, log }, { route, targets, path, headers, client, head: (s, t, raw) => answerHead(s, t, raw, ownCookies) }, {
      answered: (target, status) => finish(u, status, target.url, u.session),
      failed: (_target, err) => refuse(u, err),
      upgraded: (target, rawHeaders, upSocket) => {
        if (client.destroyed || closed) {
          upSocket.destroy();
          if (!client.destroyed) refuse(u, new GatewayError('not_ready', { message: 'The gateway is shutting down; connect again.' }));
          return;
        }
        finish(u, 101, target.url, u.session);
        client.write(Buffer.from(answerHead(101, '', rawHeaders, ownCookies), 'latin1'));
        tunnels.join(route, u.session, client, upSocket, u.head!, Buffer.alloc(0));
        upSocket.resume();
      },
    });
  };

  /** made with the gate, per config (log.access may change) */
  let finish: Finish;
  let gate: Gate | undefined;
  let isOwn: (url: string) => boolean = () => false;
  let compiledFor: Config | undefined;
  const current = (): Gate => {
    const config = deps.config();
    if (compiledFor !== config || !gate) {
      compiledFor = config;
      proxy.prepare(config.routes);
      isOwn = ownEndpointMatcher(config);
      finish = finisher(config, metrics, log);
      const base = gateOf({ config, sessions, log, credentials: web?.credentials ?? bearerOnly, ownCookies }, true);
      gate = { ...base, admitted: (a) => admitted(a as Upgrade), refused: (a, err) => refuse(a as Upgrade, err) };
    }
    return gate;
  };
  current();

  /** An upgrade answered as a plain request by the HTTP handler (no upgrade), its connection closed after. */
  const asPlainRequest = (req: IncomingMessage, socket: Socket) => {
    const res = new http.ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket);
    res.once('finish', () => {
      socket.end();
      setTimeout(() => socket.destroy(), closeGrace).unref();
    });
    deps.fallback(req, res);
  };

  const handler = function upgrade(req: IncomingMessage, duplex: Duplex, head: Buffer): void {
    const socket = duplex as Socket;
    socket.on('error', noop);
    const g = current();
    const u: Upgrade = new Admission(g, req, undefined);
    u.socket = socket;
    u.head = head;
    if (closed) return refuse(u, new GatewayError('not_ready', { message: 'The gateway is shutting down; connect again.' }));
    // the parser stopped at the head: a body would reach neither the handler nor the upstream
    if (hasBody(req)) return refuse(u, new GatewayError('bad_request', { message: 'An Upgrade request with a body is not served.' }));
    if (!isWebSocket(req) || isOwn(req.url ?? '')) return asPlainRequest(req, socket);
    admit(u);
  } as UpgradeHandler;

  Object.defineProperty(handler, 'open', { get: () => tunnels.size });
  handler.close = () => {
    closed = true;
    return tunnels.close();
  };
  return handler;
}
