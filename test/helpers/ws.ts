import http from 'node:http';
import type net from 'node:net';
import type { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { waitFor } from './wait.js';

/**
 * WebSockets for tests, both ends, on the `ws` package: an upstream that echoes, and a client whose
 * refusals (status, headers, body) stay visible, as a browser's WebSocket would hide them.
 * test/helpers/ws-raw.ts has the byte-level part that `ws` cannot do (half a frame on the wire).
 */

export interface WsPeer {
  /** text messages received, in order */
  messages: string[];
  /** the close frame received (code, reason), once the connection closed; 1006 if none came */
  closeFrame?: { code: number; reason: string };
  /** resolves when the connection is closed */
  closed: Promise<void>;
  send(text: string): void;
  close(code?: number): void;
  /** drops the connection without a closing handshake */
  terminate(): void;
  /** resolves with the n-th message (0-based) once it came */
  message(n: number, within?: number): Promise<string>;
}

function peer(ws: WebSocket): WsPeer {
  const p: WsPeer = {
    messages: [],
    closed: new Promise((r) => ws.once('close', () => r())),
    send: (text) => ws.send(text),
    close: (code = 1000) => ws.close(code),
    terminate: () => ws.terminate(),
    message: (n, within = 3000) =>
      waitFor(() => p.messages.length > n && p.messages[n], {
        timeout: within,
        interval: 5,
        message: `message #${n} (have ${p.messages.length}: ${JSON.stringify(p.messages.map((m) => m.slice(0, 40)))})`,
      }),
  };
  ws.on('message', (data, isBinary) => {
    if (!isBinary) p.messages.push(data.toString());
  });
  ws.on('close', (code, reason) => (p.closeFrame = { code, reason: reason.toString() }));
  ws.on('error', () => {});
  return p;
}

export interface WsUpstream {
  url: string;
  port: number;
  /** the upgrade requests that reached it, with its side of the socket when it accepted */
  upgrades: Array<{ url: string; headers: http.IncomingHttpHeaders; peer?: WsPeer }>;
  /** its side of every WebSocket opened */
  peers: WsPeer[];
  /** plain requests that reached it */
  requests: Array<{ url: string; headers: http.IncomingHttpHeaders }>;
  close(): Promise<void>;
}

/**
 * A WebSocket upstream: echoes every text message back as "echo:<text>", answers pings and close
 * frames (`ws` does). An upgrade to a path containing "/refuse" is answered 403 with a JSON body.
 * Plain requests get 200 JSON naming the path.
 */
export async function startWsUpstream(): Promise<WsUpstream> {
  const up: WsUpstream = { url: '', port: 0, upgrades: [], peers: [], requests: [], close: async () => {} };
  const sockets = new Set<net.Socket>();
  const wss = new WebSocketServer({ noServer: true });
  const server = http.createServer((req, res) => {
    up.requests.push({ url: req.url!, headers: req.headers });
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ plain: true, url: req.url }));
  });
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const entry: WsUpstream['upgrades'][number] = { url: req.url!, headers: req.headers };
    up.upgrades.push(entry);
    socket.on('error', () => {});
    if (req.url!.includes('/refuse')) {
      const body = JSON.stringify({ refused: true });
      socket.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nX-From: upstream\r\n\r\n${body}`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      entry.peer = peer(ws);
      ws.on('message', (data, isBinary) => {
        if (!isBinary) ws.send(`echo:${data.toString()}`);
      });
      up.peers.push(entry.peer);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  up.port = (server.address() as AddressInfo).port;
  up.url = `http://127.0.0.1:${up.port}`;
  up.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      server.close(() => r());
    });
  return up;
}

export type WsAnswer =
  | { status: 101; headers: Record<string, string>; ws: WsPeer }
  | { status: number; headers: Record<string, string>; body: string; json: any };

const flat = (h: http.IncomingHttpHeaders) => Object.fromEntries(Object.entries(h).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : String(v)]));

/**
 * Opens a WebSocket to base+path with the given extra headers (set last, so a test may name its own
 * Connection). Resolves once open; a non-101 answer resolves once its body came, with it.
 */
export function wsConnect(base: string, path: string, headers: Record<string, string> = {}): Promise<WsAnswer> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base.replace(/^http/, 'ws')}${path}`, {
      perMessageDeflate: false,
      finishRequest: (req) => {
        for (const [k, v] of Object.entries(headers)) req.setHeader(k, v);
        req.end();
      },
    });
    let answer: http.IncomingMessage | undefined;
    const p = peer(ws);
    ws.once('upgrade', (res) => (answer = res));
    ws.once('open', () => resolve({ status: 101, headers: flat(answer!.headers), ws: p }));
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.once('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(body);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode!, headers: flat(res.headers), body, json });
        req.destroy();
      });
    });
    ws.once('error', reject);
  });
}
