import type { IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { buildConnector } from 'undici';

/**
 * The proxy's HTTP/1.1 client: kept-alive connections to one upstream origin, requests written as one
 * head string, answers read by node's own HTTP parser (llhttp, the native one node's http client and
 * server use, with the same strictness: a malformed or ambiguous answer is an error, never a guess).
 *
 * Why not undici's Pool, which this replaced on the proxied path: per request undici builds a Request
 * (validating every header again), runs its parser in WebAssembly (copying each read into wasm memory),
 * and turns headers into Buffers we turned back into strings. The native parser hands over the status
 * line and headers as strings in one call. BENCHMARKS.md ("An HTTP client of our own") has the A/B.
 * undici still makes the connections (buildConnector: net or TLS, connect timeout, TLS session reuse),
 * carries WebSocket upgrades and calls WeChat.
 *
 * What a request gets:
 * - a connection from the pool (most recently used first), a new one while under `connections`, else
 *   it waits its turn in order;
 * - `headersTimeout` until the answer's head, `bodyTimeout` between its body's reads (errors with
 *   undici's codes, so upstream-failure.ts classifies both clients alike);
 * - a request body streamed with backpressure: as is with a Content-Length, chunked without;
 * - backpressure on the answer's body (`onData` returning false pauses the socket until `resume`);
 * - `abort`: the connection is reset (RST, no TIME_WAIT left behind) and nothing more is called.
 * A connection is used again only after a whole answer to a whole request, when both sides keep it
 * alive; idle ones are closed after `keepAliveTimeout`.
 */

const require = createRequire(import.meta.url);
interface NativeParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | (Error & { code?: string });
  finish(): number | (Error & { code?: string }) | undefined;
  close(): void;
  [key: number]: unknown;
}
const { HTTPParser } = require('_http_common') as {
  HTTPParser: { new (): NativeParser; RESPONSE: number; kOnHeaders: number; kOnHeadersComplete: number; kOnBody: number; kOnMessageComplete: number };
};

/** What the proxy asks of one request (the fields of undici's DispatchOptions it used). */
export interface UpstreamRequest {
  readonly path: string;
  readonly method: string;
  /** lower-case names; hop-by-hop, Host and Transfer-Encoding already gone */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: IncomingMessage | null;
  readonly headersTimeout: number;
  readonly bodyTimeout: number;
}

/** What is told of its answer, as undici's dispatch handlers were. */
export interface UpstreamHandler {
  /** at once: `abort` drops the request wherever it is (queued, connecting or answering) */
  onConnect(abort: () => void): void;
  /** the final status and headers (flat [name, value, ...], as sent); false: the handler gave up */
  onHeaders(statusCode: number, rawHeaders: string[], resume: () => void, statusText: string): boolean;
  /** false: pause until `resume` */
  onData(chunk: Buffer): boolean;
  onComplete(): void;
  onError(err: Error & { code?: string }): void;
}

export interface PoolOptions {
  /** at most this many connections; further requests wait */
  connections: number;
  /** an idle connection is closed after this many ms */
  keepAliveTimeout: number;
}

/** An error with the code undici gives the same failure (upstream-failure.ts reads the code). */
function failure(code: string, message: string): Error & { code: string } {
  return Object.assign(new Error(message), { code });
}

/**
 * A header value that could end the header early or smuggle another: CR, LF, NUL. Checked on every
 * value written, whatever its source. Names are not checked again here: every name comes from node's
 * parser (the client's, HTTP tokens by then), the gateway's own constants, or routes[].headers (whose
 * names config validation holds to tokens).
 */
const UNSAFE_VALUE = /[\r\n\0]/;

/** How long before an upstream's announced keep-alive timeout its connection is no longer reused (undici's 1 s). */
const KEEP_ALIVE_THRESHOLD = 1_000;

function headLine(name: string, value: string): string {
  if (UNSAFE_VALUE.test(value)) throw failure('UND_ERR_INVALID_ARG', `invalid ${name} header`);
  return `${name}: ${value}\r\n`;
}

/** The request's head: request line, Host, the headers, framing. */
function requestHead(r: UpstreamRequest, host: string, chunked: boolean): string {
  let head = `${r.method} ${r.path} HTTP/1.1\r\nhost: ${host}\r\n`;
  const h = r.headers;
  for (const name in h) {
    const value = h[name];
    if (value === undefined) continue;
    if (typeof value === 'string') head += headLine(name, value);
    else for (const v of value) head += headLine(name, v);
  }
  if (chunked) head += 'transfer-encoding: chunked\r\n';
  // as undici and node's client do: a method that expects a body says when it has none
  else if (r.body === null && h['content-length'] === undefined && (r.method === 'POST' || r.method === 'PUT' || r.method === 'PATCH')) head += 'content-length: 0\r\n';
  return `${head}\r\n`;
}

/** One request on its way: queued, then on a connection until its answer is over. */
class Pending {
  conn: Connection | undefined = undefined;
  /** the handler has its abort (onConnect was called) */
  told = false;
  /** aborted, failed or completed: the handler hears nothing more */
  over = false;
  constructor(
    readonly pool: UpstreamPool,
    readonly request: UpstreamRequest,
    readonly handler: UpstreamHandler,
  ) {}

  /** handed to the handler as onConnect's abort */
  readonly abort = (): void => {
    if (this.over) return;
    this.over = true;
    if (this.conn) this.conn.reset();
    else this.pool.dequeue(this);
  };
}

/** One kept-alive connection and its parser. */
class Connection {
  socket: Socket | undefined = undefined;
  readonly parser: NativeParser = new HTTPParser();
  current: Pending | undefined = undefined;
  /** the answer to `current` is informational (1xx): its end is not the answer's end */
  private informational = false;
  /** the answer's head was passed on */
  private answered = false;
  /** the whole request (body included) was written */
  private sent = false;
  /** both sides keep the connection open after this answer */
  private keepAlive = true;
  private timer: NodeJS.Timeout | undefined = undefined;
  private flushed: string[] | undefined = undefined;
  /** the answer ended within the read being parsed */
  private finished = false;
  /** stops reading the request's body into this connection (and lets the rest of it drain) */
  private detachBody: (() => void) | undefined = undefined;
  /** when (performance.now()) an idle connection is no longer used */
  idleUntil = 0;
  /** how long it may idle: keepAliveTimeout, or less when the upstream's Keep-Alive: timeout says so */
  idleFor: number;
  closed = false;

  constructor(readonly pool: UpstreamPool) {
    this.idleFor = pool.keepAliveTimeout;
    const p = this.parser;
    p.initialize(HTTPParser.RESPONSE, {}, 0, 0);
    // more header lines than the parser holds at once arrive first in pieces
    p[HTTPParser.kOnHeaders] = (headers: string[]) => {
      this.flushed = this.flushed ? this.flushed.concat(headers) : headers;
    };
    p[HTTPParser.kOnHeadersComplete] = (
      _major: number,
      _minor: number,
      headers: string[] | undefined,
      _method: unknown,
      _url: unknown,
      status: number,
      statusText: string,
      _upgrade: boolean,
      keepAlive: boolean,
    ): number => this.headersComplete(headers, status, statusText, keepAlive);
    p[HTTPParser.kOnBody] = (chunk: Buffer) => this.body(chunk);
    p[HTTPParser.kOnMessageComplete] = () => this.messageComplete();
  }

  /** Connects; the first request is written once the connection is up. */
  open(first: Pending): void {
    this.bind(first);
    this.pool.connect((err, socket) => {
      if (err || !socket) return this.fail(err ?? failure('UND_ERR_SOCKET', 'no connection'));
      if (this.closed) return void socket.destroy();
      this.socket = socket;
      socket.on('data', (data: Buffer) => this.read(data));
      socket.on('end', () => this.ended());
      socket.on('error', (e: Error) => this.fail(e));
      socket.on('close', () => this.gone());
      if (this.current && !this.current.over) this.write();
      else this.release();
    });
  }

  /** Takes a request (a new connection's first, or an idle one's next). */
  bind(p: Pending): void {
    p.conn = this;
    this.current = p;
    this.answered = false;
    this.sent = false;
    this.finished = false;
    this.keepAlive = true;
    if (!p.told) {
      p.told = true;
      p.handler.onConnect(p.abort);
    }
  }

  /** Writes the request's head, then its body; arms the headers timeout. */
  write(): void {
    const p = this.current!;
    const socket = this.socket!;
    const r = p.request;
    const body = r.body;
    const chunked = body !== null && r.headers['content-length'] === undefined;
    let head: string;
    try {
      head = requestHead(r, this.pool.host, chunked);
    } catch (err) {
      // nothing was written: the connection stays good
      p.over = true;
      this.current = undefined;
      p.handler.onError(err as Error);
      this.release();
      return;
    }
    if (r.headersTimeout > 0) this.timer = setTimeout(this.timedOut, r.headersTimeout);
    socket.write(head, 'latin1');
    if (body === null) {
      this.sent = true;
      return;
    }
    const onDrain = (): void => void body.resume();
    const onData = (chunk: Buffer): void => {
      if (chunked) {
        socket.cork();
        socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
        socket.write(chunk);
        socket.write('\r\n', 'latin1');
        socket.uncork();
      } else socket.write(chunk);
      if (socket.writableNeedDrain) {
        body.pause();
        socket.once('drain', onDrain);
      }
    };
    const onEnd = (): void => {
      if (chunked) socket.write('0\r\n\r\n', 'latin1');
      this.sent = true;
      detach();
    };
    const detach = (): void => {
      this.detachBody = undefined;
      body.off('data', onData);
      body.off('end', onEnd);
      socket.off('drain', onDrain);
      // what is left of a body the upstream no longer reads is drained, so the client's connection goes on
      if (!this.sent) body.resume();
    };
    this.detachBody = detach;
    body.on('data', onData);
    body.on('end', onEnd);
  }

  private readonly timedOut = (): void => {
    const p = this.current;
    if (!p || p.over) return;
    this.fail(this.answered ? failure('UND_ERR_BODY_TIMEOUT', 'Body Timeout Error') : failure('UND_ERR_HEADERS_TIMEOUT', 'Headers Timeout Error'));
  };

  private read(data: Buffer): void {
    if (!this.current) {
      // bytes nobody asked for: the connection cannot be trusted any more
      this.destroy();
      return;
    }
    const r = this.parser.execute(data);
    if (typeof r !== 'number') return this.fail(r);
    if (this.finished) {
      this.finished = false;
      // reused only after a whole request got a whole answer, and nothing after it
      if (this.sent && this.keepAlive) this.release();
      else this.destroy();
    }
  }

  private headersComplete(headers: string[] | undefined, status: number, statusText: string, keepAlive: boolean): number {
    const p = this.current;
    let all = headers ?? [];
    if (this.flushed) {
      all = headers ? this.flushed.concat(headers) : this.flushed;
      this.flushed = undefined;
    }
    if (this.finished) {
      // a second answer in one read, to a request not yet sent: the upstream is out of step
      this.destroy();
      return 1;
    }
    if (!p || p.over) return 1;
    if (status < 200) {
      if (status === 101) {
        this.fail(failure('UND_ERR_INFO', 'upstream switched protocols on a request that asked for no upgrade'));
        return 1;
      }
      // 100 Continue, 103 Early Hints: the final answer follows on this connection
      this.informational = true;
      return 1;
    }
    this.keepAlive = keepAlive && this.keepAliveHint(all);
    this.answered = true;
    if (p.request.bodyTimeout !== p.request.headersTimeout) {
      clearTimeout(this.timer);
      this.timer = setTimeout(this.timedOut, p.request.bodyTimeout);
    } else this.timer?.refresh();
    const go = p.handler.onHeaders(status, all, this.resume, statusText);
    if (!go && !p.over) p.abort();
    // an answer to HEAD has no body whatever its headers say
    return p.request.method === 'HEAD' ? 1 : 0;
  }

  /**
   * An upstream's `Keep-Alive: timeout=N` (node's http server sends 5 s): the connection idles at most
   * N s less one, so it is not reused just as the upstream closes it; false when that leaves no time.
   */
  private keepAliveHint(headers: string[]): boolean {
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!;
      if (name.length !== 10 || name.toLowerCase() !== 'keep-alive') continue;
      const m = /(?:^|[\s,;])timeout\s*=\s*(\d+)/i.exec(headers[i + 1]!);
      if (!m) break;
      this.idleFor = Math.min(this.pool.keepAliveTimeout, Number(m[1]) * 1000 - KEEP_ALIVE_THRESHOLD);
      return this.idleFor > 0;
    }
    return true;
  }

  private readonly resume = (): void => {
    this.socket?.resume();
  };

  private body(chunk: Buffer): void {
    const p = this.current;
    if (!p || p.over) return;
    this.timer?.refresh();
    if (!p.handler.onData(chunk)) this.socket?.pause();
  }

  private messageComplete(): void {
    if (this.informational) {
      this.informational = false;
      return;
    }
    const p = this.current;
    if (!p || p.over) return;
    p.over = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.finished = true;
    p.handler.onComplete();
  }

  /** After a whole exchange: the next request, or idle in the pool; closed when it cannot be reused. */
  private release(): void {
    this.current = undefined;
    if (!this.keepAlive || this.closed || !this.socket || this.socket.destroyed) return this.destroy();
    this.pool.idle(this);
  }

  /** The upstream closed its side: a body delimited by the close ends here; anything else failed. */
  private ended(): void {
    const p = this.current;
    if (p && !p.over) {
      // a body delimited by the close ends here; otherwise (the parser says so) the answer was cut
      this.parser.finish();
      if (!p.over) return this.fail(failure('UND_ERR_SOCKET', 'other side closed'));
    }
    this.destroy();
  }

  private gone(): void {
    const p = this.current;
    this.closed = true;
    if (p && !p.over) this.fail(failure('UND_ERR_SOCKET', 'other side closed'));
    this.cleanupClosed();
  }

  /** The request in flight failed: its handler hears once; the connection is not used again. */
  fail(err: Error & { code?: string }): void {
    const p = this.current;
    this.destroy();
    if (p && !p.over) {
      p.over = true;
      p.handler.onError(err);
    }
  }

  /** The client left: reset the connection so it leaves no TIME_WAIT behind. */
  reset(): void {
    const s = this.socket;
    this.current = undefined;
    if (s && !s.destroyed && !s.connecting && 'resetAndDestroy' in s) s.resetAndDestroy();
    this.destroy();
  }

  destroy(): void {
    this.detachBody?.();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.keepAlive = false;
    if (!this.closed) {
      this.closed = true;
      this.socket?.destroy();
      if (!this.socket) this.cleanupClosed();
    }
  }

  private cleaned = false;
  private cleanupClosed(): void {
    if (this.cleaned) return;
    this.cleaned = true;
    this.current = undefined;
    this.pool.closed(this);
    // not from inside one of its own callbacks
    setImmediate(() => this.parser.close());
  }
}

/** The kept-alive connections to one origin. */
export class UpstreamPool {
  readonly host: string;
  private readonly free: Connection[] = [];
  readonly keepAliveTimeout: number;
  private readonly waiting: Pending[] = [];
  private count = 0;
  private sweeper: NodeJS.Timeout | undefined = undefined;
  private destroyed = false;
  private readonly connector: buildConnector.connector;
  private readonly where: { hostname: string; host: string; protocol: string; port: string; servername?: string };

  constructor(origin: string, private readonly options: PoolOptions) {
    const u = new URL(origin);
    this.host = u.host;
    this.keepAliveTimeout = options.keepAliveTimeout;
    const hostname = u.hostname.replace(/^\[|\]$/g, '');
    this.where = { hostname, host: u.host, protocol: u.protocol, port: u.port, servername: u.protocol === 'https:' && !/^[\d.]+$|:/.test(hostname) ? hostname : undefined };
    this.connector = buildConnector({});
  }

  connect(cb: (err: Error | null, socket?: Socket) => void): void {
    this.connector(this.where as never, (err, socket) => cb(err, socket as Socket | undefined));
  }

  /** Sends a request; everything after is told to `handler`. */
  dispatch(request: UpstreamRequest, handler: UpstreamHandler): void {
    const p = new Pending(this, request, handler);
    if (this.destroyed) {
      p.over = true;
      handler.onError(failure('UND_ERR_DESTROYED', 'The client is destroyed'));
      return;
    }
    let conn = this.free.pop();
    if (conn) {
      const now = performance.now();
      while (conn && (conn.closed || conn.idleUntil <= now)) {
        conn.destroy();
        conn = this.free.pop();
      }
    }
    if (conn) {
      conn.socket!.ref();
      conn.bind(p);
      if (!p.over) conn.write();
      return;
    }
    if (this.count < this.options.connections) {
      this.count++;
      new Connection(this).open(p);
      return;
    }
    this.waiting.push(p);
    p.told = true;
    handler.onConnect(p.abort);
  }

  dequeue(p: Pending): void {
    const i = this.waiting.indexOf(p);
    if (i >= 0) this.waiting.splice(i, 1);
  }

  /** A connection done with its request: the next waiting one, or idle. */
  idle(conn: Connection): void {
    const next = this.waiting.shift();
    if (next) {
      conn.bind(next);
      if (!next.over) conn.write();
      return;
    }
    conn.idleUntil = performance.now() + conn.idleFor;
    conn.socket!.unref();
    this.free.push(conn);
    this.sweeper ??= setInterval(() => this.sweep(), Math.max(250, this.options.keepAliveTimeout / 4)).unref();
  }

  /** Closes connections idle for keepAliveTimeout (or the upstream's shorter Keep-Alive: timeout). */
  private sweep(): void {
    const now = performance.now();
    for (let i = this.free.length - 1; i >= 0; i--) {
      const c = this.free[i]!;
      if (c.idleUntil <= now) {
        this.free.splice(i, 1);
        c.destroy();
      }
    }
    if (this.free.length === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  closed(conn: Connection): void {
    this.count--;
    const i = this.free.indexOf(conn);
    if (i >= 0) this.free.splice(i, 1);
    // a waiting request takes the freed place
    const next = this.waiting.shift();
    if (next && !this.destroyed) {
      this.count++;
      const c = new Connection(this);
      c.open(next);
    }
  }

  destroy(): Promise<void> {
    this.destroyed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    for (const p of this.waiting.splice(0)) {
      p.over = true;
      p.handler.onError(failure('UND_ERR_DESTROYED', 'The client is destroyed'));
    }
    for (const c of this.free.splice(0)) c.destroy();
    return Promise.resolve();
  }
}
