import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: string;
}

export interface Upstream {
  url: string;
  port: number;
  /** Requests that reached the upstream, in order. */
  seen: Seen[];
  /** Upstream requests whose client side went away before the answer was sent. */
  aborted: number;
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
      const seen: Seen = { method: req.method!, url: req.url!, headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks).toString() };
      up.seen.push(seen);
      const path = req.url!.split('?')[0]!;
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
