import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';

/**
 * A minimal WebSocket (RFC 6455) for tests, both ends: the handshake, and text, ping and close frames
 * (unfragmented, as these tests send them). No dependency: node's http 'upgrade' and raw sockets.
 */

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
export const acceptOf = (key: string) => createHash('sha1').update(key + GUID).digest('base64');

export interface Frame {
  opcode: number;
  payload: Buffer;
}

export function encodeFrame(opcode: number, payload: Buffer, mask: boolean): Buffer {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, len]) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  if (len >= 126 && len < 65536) {
    head[0] = 0x80 | opcode;
    head[1] = 126;
    head.writeUInt16BE(len, 2);
  } else if (len >= 65536) {
    head[0] = 0x80 | opcode;
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  if (!mask) return Buffer.concat([head, payload]);
  head[1] = head[1]! | 0x80;
  const key = randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i]! ^= key[i & 3]!;
  return Buffer.concat([head, key, body]);
}

/** Cuts complete frames off the front of a buffer (unmasking them); returns the frames and the rest. */
export function decodeFrames(buf: Buffer): { frames: Frame[]; rest: Buffer } {
  const frames: Frame[] = [];
  let off = 0;
  for (;;) {
    if (buf.length - off < 2) break;
    const b0 = buf[off]!;
    const b1 = buf[off + 1]!;
    let len = b1 & 127;
    let p = off + 2;
    if (len === 126) {
      if (buf.length < p + 2) break;
      len = buf.readUInt16BE(p);
      p += 2;
    } else if (len === 127) {
      if (buf.length < p + 8) break;
      len = Number(buf.readBigUInt64BE(p));
      p += 8;
    }
    const masked = (b1 & 0x80) !== 0;
    const key = masked ? buf.subarray(p, p + 4) : undefined;
    if (masked) p += 4;
    if (buf.length < p + len) break;
    const payload = Buffer.from(buf.subarray(p, p + len));
    if (key) for (let i = 0; i < payload.length; i++) payload[i]! ^= key[i & 3]!;
    frames.push({ opcode: b0 & 0x0f, payload });
    off = p + len;
  }
  return { frames, rest: buf.subarray(off) };
}

export interface WsPeer {
  /** text messages received, in order */
  messages: string[];
  /** the close frame received: code and reason; undefined until one came */
  closeFrame?: { code: number; reason: string };
  /** resolves when the TCP connection is closed */
  closed: Promise<void>;
  send(text: string): void;
  /** sends raw bytes (e.g. half a frame) */
  raw(bytes: Buffer): void;
  close(code?: number): void;
  /** resolves with the n-th message (0-based) once it came */
  message(n: number, within?: number): Promise<string>;
  socket: net.Socket;
}

function peer(socket: net.Socket, mask: boolean, first: Buffer, onFrame?: (f: Frame, p: WsPeer) => void): WsPeer {
  let buf = Buffer.alloc(0);
  const waiters: Array<() => void> = [];
  const p: WsPeer = {
    messages: [],
    closed: new Promise((r) => socket.once('close', () => r())),
    send: (text) => socket.write(encodeFrame(1, Buffer.from(text), mask)),
    raw: (bytes) => socket.write(bytes),
    close: (code = 1000) => {
      const b = Buffer.alloc(2);
      b.writeUInt16BE(code);
      socket.write(encodeFrame(8, b, mask));
    },
    message: (n, within = 3000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no message #${n} within ${within} ms (have ${p.messages.length}: ${JSON.stringify(p.messages.map((m) => m.slice(0, 40)))})`)), within);
        const check = () => {
          if (p.messages.length > n) {
            clearTimeout(timer);
            resolve(p.messages[n]!);
          } else waiters.push(check);
        };
        check();
      }),
    socket,
  };
  const data = (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    const { frames, rest } = decodeFrames(buf);
    buf = Buffer.from(rest);
    for (const f of frames) {
      if (f.opcode === 1) p.messages.push(f.payload.toString());
      else if (f.opcode === 8) {
        p.closeFrame = { code: f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005, reason: f.payload.subarray(2).toString() };
      } else if (f.opcode === 9) socket.write(encodeFrame(10, f.payload, mask));
      onFrame?.(f, p);
    }
    for (const w of waiters.splice(0)) w();
  };
  socket.on('data', data);
  socket.on('error', () => {});
  if (first.length) data(first);
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
 * A WebSocket upstream: echoes every text message back as "echo:<text>", answers pings, answers a
 * close frame with one and closes. An upgrade to a path containing "/refuse" is answered 403 with a
 * JSON body. Plain requests get 200 JSON naming the path.
 */
export async function startWsUpstream(): Promise<WsUpstream> {
  const up: WsUpstream = { url: '', port: 0, upgrades: [], peers: [], requests: [], close: async () => {} };
  const sockets = new Set<net.Socket>();
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
    const key = String(req.headers['sec-websocket-key']);
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptOf(key)}\r\n\r\n`);
    entry.peer = peer(socket, false, head, (f, p) => {
      if (f.opcode === 1) p.send(`echo:${f.payload.toString()}`);
      if (f.opcode === 8) socket.end(encodeFrame(8, f.payload.subarray(0, 2), false));
    });
    up.peers.push(entry.peer);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  up.port = (server.address() as AddressInfo).port;
  up.url = `http://127.0.0.1:${up.port}`;
  up.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return up;
}

export type WsAnswer =
  | { status: 101; headers: Record<string, string>; ws: WsPeer }
  | { status: number; headers: Record<string, string>; body: string; json: any };

/**
 * Opens a WebSocket to base+path with the given extra headers (raw socket: a refusal's status, headers
 * and body are visible, as a browser's WebSocket would hide them). Resolves on the answer's head; a
 * non-101 answer resolves once the connection closes, with its body.
 */
export function wsConnect(base: string, path: string, headers: Record<string, string> = {}): Promise<WsAnswer> {
  const u = new URL(base);
  const key = randomBytes(16).toString('base64');
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(u.port), u.hostname);
    socket.on('error', reject);
    const lines = [`GET ${path} HTTP/1.1`, `Host: ${u.host}`, 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', `Sec-WebSocket-Key: ${key}`];
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
    socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(head[0]!.split(' ')[1]);
      const hdrs: Record<string, string> = {};
      for (const l of head.slice(1)) {
        const i = l.indexOf(':');
        hdrs[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      const rest = buf.subarray(end + 4);
      if (status === 101) {
        socket.off('data', onData);
        if (hdrs['sec-websocket-accept'] !== acceptOf(key)) reject(new Error('bad Sec-WebSocket-Accept'));
        resolve({ status, headers: hdrs, ws: peer(socket, true, rest) });
        return;
      }
      socket.off('data', onData);
      let body = rest;
      socket.on('data', (c: Buffer) => (body = Buffer.concat([body, c])));
      socket.once('close', () => {
        const text = body.toString();
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status, headers: hdrs, body: text, json });
      });
    };
    socket.on('data', onData);
  });
}
