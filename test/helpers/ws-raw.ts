import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';

/**
 * WebSocket frames as bytes, and a client on a raw socket: for the few tests that must put half a
 * frame on the wire or look at frame boundaries (the gateway's frame cursor), which the `ws` package,
 * rightly, never does. Everything else uses test/helpers/ws.ts.
 */

export interface Frame {
  opcode: number;
  payload: Buffer;
}

export function encodeFrame(opcode: number, payload: Buffer, mask: boolean): Buffer {
  const len = payload.length;
  const head = Buffer.alloc(len < 126 ? 2 : len < 65536 ? 4 : 10);
  head[0] = 0x80 | opcode;
  if (len < 126) head[1] = len;
  else if (len < 65536) {
    head[1] = 126;
    head.writeUInt16BE(len, 2);
  } else {
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
    const key = b1 & 0x80 ? buf.subarray(p, (p += 4)) : undefined;
    if (buf.length < p + len) break;
    const payload = Buffer.from(buf.subarray(p, p + len));
    if (key) for (let i = 0; i < payload.length; i++) payload[i]! ^= key[i & 3]!;
    frames.push({ opcode: buf[off]! & 0x0f, payload });
    off = p + len;
  }
  return { frames, rest: buf.subarray(off) };
}

export interface RawWebSocket {
  /** the close frame received, as soon as it came (a raw client does not answer it) */
  closeFrame?: { code: number; reason: string };
  /** resolves when the TCP connection is closed */
  closed: Promise<void>;
  /** writes bytes as they are (e.g. half a frame) */
  raw(bytes: Buffer): void;
}

/** A handshake on a raw socket; resolves once the answer is 101, rejects on any other. */
export function rawWebSocket(base: string, path: string, headers: Record<string, string> = {}): Promise<RawWebSocket> {
  const u = new URL(base);
  const key = randomBytes(16).toString('base64');
  const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(u.port), u.hostname);
    socket.on('error', reject);
    const lines = [`GET ${path} HTTP/1.1`, `Host: ${u.host}`, 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', `Sec-WebSocket-Key: ${key}`];
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
    socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    const ws: RawWebSocket = { closed: new Promise((r) => socket.once('close', () => r())), raw: (b) => socket.write(b) };
    let buf = Buffer.alloc(0);
    let open = false;
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!open) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        if (!head.startsWith('HTTP/1.1 101') || !head.includes(accept)) return reject(new Error(`refused: ${head.split('\r\n')[0]}`));
        open = true;
        buf = buf.subarray(end + 4);
        resolve(ws);
      }
      const { frames, rest } = decodeFrames(buf);
      buf = Buffer.from(rest);
      for (const f of frames) if (f.opcode === 8) ws.closeFrame = { code: f.payload.readUInt16BE(0), reason: f.payload.subarray(2).toString() };
    });
  });
}
