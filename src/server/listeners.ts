import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Config } from '../config/schema.js';
import type { TlsFiles } from './tls.js';

/** The gateway's listeners: opening one (ListenError when it cannot), its limits, and draining it. */

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

export function listenFailure(err: unknown, listener: string, host: string, port: number, key: string): ListenError {
  const code = (err as NodeJS.ErrnoException).code;
  return new ListenError(listener, hostPort(host, port), key, code, (code && LISTEN_FAILURES[code]) ?? (err as Error).message);
}

/** Resolves with the port it listens on. `what`: the listener and its config key, for the error when it cannot listen. */
export function listen(server: http.Server, port: number, host: string, what: { listener: string; key: string }): Promise<number> {
  return new Promise((resolve, reject) => {
    const failed = (err: Error) => reject(listenFailure(err, what.listener, host, port, what.key));
    server.once('error', failed);
    server.listen(port, host, () => {
      server.off('error', failed);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** The URL a client on this host reaches a listener at (a wildcard host as 127.0.0.1). */
export function urlOf(host: string, port: number, scheme = 'http'): string {
  const h = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  return `${scheme}://${h}:${port}`;
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
export function closeServer(server: http.Server, deadline: number): Promise<void> {
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

/** The main listener, not yet listening: HTTPS with server.tls (the same handler), its connections tracked for closeServer. */
export function createMainServer(config: Config, tlsFiles: TlsFiles | undefined, handler: http.RequestListener): http.Server {
  const server: http.Server = tlsFiles
    ? (https.createServer({ ...serverOptions(config), ...tlsFiles }, handler) as unknown as http.Server)
    : http.createServer(serverOptions(config), handler);
  trackConnections(server);
  applyServerLimits(server, config);
  return server;
}

/** The limits of server.* that a reload may change, applied to the main listener. */
export function applyServerLimits(server: http.Server, c: Config): void {
  server.maxConnections = c.server.maxConnections > 0 ? c.server.maxConnections : Infinity;
  server.requestTimeout = c.server.requestTimeout;
  server.headersTimeout = c.server.headersTimeout;
  server.keepAliveTimeout = c.server.keepAliveTimeout;
}

/** The metrics.port listener (not yet listening): GET/HEAD of `path` answers `render()`, anything else 404. */
export function createMetricsServer(path: string, render: () => Promise<string>, contentType: string): http.Server {
  return http.createServer((req, res) => {
    if (req.url?.split('?')[0] !== path || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not_found","message":"Only the metrics path is served here."}');
      return;
    }
    render().then(
      (text) => res.writeHead(200, { 'content-type': contentType }).end(text),
      () => res.writeHead(500).end(),
    );
  });
}

/**
 * Opens a listener (ListenError when it cannot) and answers its port and URL; `undo` gets its closing,
 * for a start that fails later.
 */
export async function openListener(
  server: http.Server,
  host: string,
  port: number,
  what: { listener: string; key: string; scheme?: string },
  undo: Array<() => Promise<void> | void>,
): Promise<{ port: number; url: string }> {
  const actual = await listen(server, port, host, what);
  undo.push(() => closeServer(server, 0));
  return { port: actual, url: urlOf(host, actual, what.scheme) };
}
