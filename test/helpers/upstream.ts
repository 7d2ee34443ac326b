import http from 'node:http';
import net, { type AddressInfo } from 'node:net';

export interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: string;
  /** trailer fields of a chunked request body */
  trailers: http.IncomingHttpHeaders;
}

export interface Upstream {
  url: string;
  port: number;
  /** Requests that reached the upstream, in order. */
  seen: Seen[];
  /** Upstream requests whose client side went away before the answer was sent. */
  aborted: number;
  /** While set, every request is recorded and answered with this status (a receiver that fails, then recovers). */
  status?: number;
  close(): Promise<void>;
}

/**
 * A real HTTP upstream on port 0 that records what reaches it. Paths:
 *   /…/slow?ms=N   answers after N ms;  /…/hang  never answers;  anything else echoes JSON.
 */
export async function startUpstream(): Promise<Upstream> {
  const up: Upstream = { url: '', port: 0, seen: [], aborted: 0, close: async () => {} };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const seen: Seen = { method: req.method!, url: req.url!, headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks).toString(), trailers: req.trailers };
      up.seen.push(seen);
      const path = req.url!.split('?')[0]!;
      if (up.status !== undefined) {
        res.writeHead(up.status, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ failing: up.status }));
        return;
      }
      const send = () => {
        const body = JSON.stringify({ ok: true, url: req.url, openid: req.headers['x-openid'] ?? null });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-upstream': 'yes' });
        res.end(body);
      };
      res.on('close', () => {
        if (!res.writableFinished) up.aborted++;
      });
      if (path.endsWith('/hang')) return;
      if (path.endsWith('/slow')) {
        const ms = Number(new URL(req.url!, 'http://x').searchParams.get('ms') ?? 1000);
        const t = setTimeout(send, ms);
        res.on('close', () => clearTimeout(t));
        return;
      }
      send();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  up.port = (server.address() as AddressInfo).port;
  up.url = `http://127.0.0.1:${up.port}`;
  up.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return up;
}

export interface RawUpstream {
  url: string;
  /** The head (request line and header lines) of every request that reached it, in order. */
  heads: string[];
  /** connections accepted so far */
  readonly connections: number;
  close(): Promise<void>;
}

/**
 * An upstream that answers with whatever bytes `answer` writes on the socket, malformed ones
 * included (a node http server would refuse to send them). It reads each request's head and its
 * Content-Length body (the gateway sends nothing else to it in these tests), then calls `answer`.
 */
export async function startRawUpstream(answer: (head: string, socket: net.Socket) => void): Promise<RawUpstream> {
  const heads: string[] = [];
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = '';
    socket.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.slice(0, end);
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + length) return;
        buf = buf.slice(end + 4 + length);
        heads.push(head);
        answer(head, socket);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    heads,
    get connections() {
      return connections;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
