import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Context } from 'koa';
import { ERRORS, toGatewayError, type ErrorCode, type GatewayError } from './errors.js';
import type { Logger } from './logger.js';

/**
 * The one writer of error answers: `{ error, message }` JSON with the catalogue's status, the error's
 * own headers and Cache-Control: no-store, on a koa context (own endpoints), a bare ServerResponse
 * (the proxied path) or a raw socket (a refused WebSocket upgrade); and the one log line of each.
 */

export function errorBody(code: ErrorCode, message?: string): string {
  return JSON.stringify({ error: code, message: message ?? ERRORS[code].message });
}

/** How an answered error is logged: 5xx at warn (a store outage is logged where it is noticed), the rest at debug. */
export function logAnswer(gerr: GatewayError, log: Logger, route: string | undefined): void {
  if (gerr.status >= 500 && gerr.code !== 'session_store_unavailable') log.warn({ error: gerr.code, route, ...gerr.detail }, gerr.message);
  else log.debug({ error: gerr.code, route, ...gerr.detail }, gerr.message);
}

/**
 * Writes `gerr` on a bare response, or destroys it when an answer has begun already (nothing else can be
 * said then). `head`: a HEAD request, answered without the body. Logs nothing (see sendError).
 */
export function writeErrorAnswer(res: ServerResponse, gerr: GatewayError, head = false): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = errorBody(gerr.code, gerr.message);
  res.writeHead(gerr.status, {
    ...gerr.headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(head ? undefined : body);
}

/** Anything the proxied path threw, answered on the bare response and logged. */
export function sendError(req: { method?: string }, res: ServerResponse, err: unknown, log: Logger, route: string | undefined): GatewayError {
  const gerr = toGatewayError(err, log, route);
  const begun = res.headersSent;
  writeErrorAnswer(res, gerr, req.method === 'HEAD');
  if (!begun) logAnswer(gerr, log, route);
  return gerr;
}

/**
 * Anything a refused upgrade threw, as a plain HTTP/1.1 answer written on its raw socket (no
 * ServerResponse exists for an upgrade), with Connection: close, and logged. The socket is ended;
 * the caller cuts it after a grace time. Returns the error answered, for its status.
 */
export function refuseOnSocket(socket: Duplex, err: unknown, log: Logger, route: string | undefined): GatewayError {
  const gerr = toGatewayError(err, log, route);
  logAnswer(gerr, log, route);
  if (socket.destroyed) return gerr;
  const body = errorBody(gerr.code, gerr.message);
  let head = `HTTP/1.1 ${gerr.status} ${STATUS_CODES[gerr.status] ?? ''}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\nconnection: close\r\n`;
  for (const [k, v] of Object.entries(gerr.headers ?? {})) if (k.toLowerCase() !== 'connection') head += `${k}: ${v}\r\n`;
  socket.end(`${head}\r\n${body}`);
  return gerr;
}

/** Turns anything a koa handler threw into the catalogue's status and `{ error, message }` body. */
export function writeError(ctx: Context, err: unknown, log: Logger): void {
  const route: string | undefined = ctx.state.route;
  const gerr = toGatewayError(err, log, route);
  if (ctx.respond === false && ctx.res.headersSent) {
    ctx.res.destroy();
    return;
  }
  ctx.respond = true;
  ctx.status = gerr.status;
  if (gerr.headers) ctx.set(gerr.headers);
  ctx.set('Cache-Control', 'no-store');
  ctx.body = { error: gerr.code, message: gerr.message };
  logAnswer(gerr, log, route);
}
