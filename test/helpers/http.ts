import http from 'node:http';
import net from 'node:net';

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: any;
}

/**
 * One HTTP request sent exactly as given (fetch would normalise the path: "..", "%2e%2e").
 * `headers` may be an array of [name, value] pairs to send repeated or odd-cased headers.
 * Each request has a connection of its own unless `agent` (e.g. a keep-alive http.Agent) is given.
 */
export function request(
  base: string,
  opts: {
    method?: string;
    path?: string;
    headers?: Record<string, string | string[]> | Array<[string, string]>;
    body?: string;
    agent?: http.Agent;
  } = {},
): Promise<Reply> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: u.hostname,
      port: u.port,
      method: opts.method ?? 'GET',
      path: opts.path ?? '/',
      agent: opts.agent ?? false,
      // As an array, Node sends the headers exactly as given, without adding Host.
      headers: Array.isArray(opts.headers)
        ? [...(opts.headers.some(([k]) => k.toLowerCase() === 'host') ? [] : ['Host', u.host]), ...opts.headers.flat()]
        : opts.headers,
    } as http.RequestOptions);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json: any;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode!, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** One response read off a raw socket. `complete` is false when the connection ended inside its body. */
export interface RawResponse {
  status: number;
  /** lower-cased names; a repeated header appears once per line */
  headers: Array<[string, string]>;
  body: string;
  complete: boolean;
}

export interface RawReply {
  /** Everything received, latin1. */
  text: string;
  responses: RawResponse[];
  /** The server closed (or reset) the connection; false when we gave up after `idleMs` of silence. */
  closedByServer: boolean;
}

/** The value of the first `name` header of a raw response (undefined when absent). */
export function rawHeader(res: RawResponse | undefined, name: string): string | undefined {
  return res?.headers.find(([n]) => n === name.toLowerCase())?.[1];
}

/** Splits what a server sent on one connection into responses (Content-Length, chunked, or until close). */
export function parseResponses(text: string): RawResponse[] {
  const out: RawResponse[] = [];
  let rest = text;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    if (!/^HTTP\/1\.[01] \d{3}/.test(rest) || end < 0) break;
    const lines = rest.slice(0, end).split('\r\n');
    const status = Number(lines[0]!.slice(9, 12));
    const headers = lines.slice(1).map((l): [string, string] => {
      const c = l.indexOf(':');
      return [l.slice(0, c).toLowerCase(), l.slice(c + 1).trim()];
    });
    rest = rest.slice(end + 4);
    const get = (n: string) => headers.find(([h]) => h === n)?.[1];
    let body = '';
    let complete = true;
    if ((status >= 100 && status < 200) || status === 204 || status === 304) {
      // no body
    } else if (/chunked/i.test(get('transfer-encoding') ?? '')) {
      complete = false;
      for (;;) {
        const nl = rest.indexOf('\r\n');
        if (nl < 0) break;
        const size = parseInt(rest.slice(0, nl), 16);
        if (Number.isNaN(size) || rest.length < nl + 2 + size + 2) break;
        body += rest.slice(nl + 2, nl + 2 + size);
        rest = rest.slice(nl + 2 + size + 2);
        if (size === 0) {
          complete = true;
          break;
        }
      }
    } else if (get('content-length') !== undefined) {
      const n = Number(get('content-length'));
      body = rest.slice(0, n);
      complete = rest.length >= n;
      rest = rest.slice(n);
    } else {
      body = rest;
      rest = '';
    }
    out.push({ status, headers, body, complete });
    if (!complete) break;
  }
  return out;
}

export interface RawConnection {
  write(data: string | Buffer): void;
  /** Resolves with everything received so far once it matches `re`; rejects after `ms`. */
  waitFor(re: RegExp, ms?: number): Promise<string>;
  /** Waits until the server closes the connection or nothing arrives for `idleMs`, then destroys it. */
  done(idleMs?: number): Promise<RawReply>;
}

/**
 * A plain TCP connection to the server of `base`, for requests a client library would normalise or
 * refuse (odd framing, bare LF, absolute-form targets, raw bytes in headers). Bytes go out exactly as given.
 */
export async function rawConnect(base: string): Promise<RawConnection> {
  const u = new URL(base);
  const socket = net.connect(Number(u.port), u.hostname);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let text = '';
  let closed = false;
  const listeners = new Set<() => void>();
  const changed = () => {
    for (const l of listeners) l();
  };
  socket.on('data', (d: Buffer) => {
    text += d.toString('latin1');
    changed();
  });
  socket.on('error', () => {});
  socket.on('close', () => {
    closed = true;
    changed();
  });
  return {
    write: (data) => void socket.write(data),
    waitFor: (re, ms = 2000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (re.test(text)) {
            listeners.delete(check);
            clearTimeout(timer);
            resolve(text);
          } else if (closed) {
            listeners.delete(check);
            clearTimeout(timer);
            reject(new Error(`connection closed before ${re}; received ${JSON.stringify(text)}`));
          }
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`no ${re} within ${ms} ms; received ${JSON.stringify(text)}`));
        }, ms);
        listeners.add(check);
        check();
      }),
    done: (idleMs = 500) =>
      new Promise((resolve) => {
        let timer: NodeJS.Timeout;
        const finish = () => {
          listeners.delete(check);
          clearTimeout(timer);
          socket.destroy();
          resolve({ text, responses: parseResponses(text), closedByServer: closed });
        };
        const check = () => {
          if (closed) return finish();
          clearTimeout(timer);
          timer = setTimeout(finish, idleMs);
        };
        listeners.add(check);
        check();
      }),
  };
}

/** Sends `data` on a new connection and collects the answer(s): see rawConnect. */
export async function rawRequest(base: string, data: string | Buffer, idleMs = 500): Promise<RawReply> {
  const conn = await rawConnect(base);
  conn.write(data);
  return conn.done(idleMs);
}
