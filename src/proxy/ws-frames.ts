import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';

/**
 * The little of RFC 6455 the gateway speaks: its own close frame, and following the frame boundaries of
 * a tunnel's two directions so that the close frame goes in between two frames.
 */

/** A close frame (RFC 6455 5.5.1); masked when the gateway sends it as the client (to the upstream). */
export function closeFrame(code: number, reason: string, mask: boolean): Buffer {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2);
  const head = Buffer.from([0x88, (mask ? 0x80 : 0) | payload.length]);
  if (!mask) return Buffer.concat([head, payload]);
  const key = randomBytes(4);
  for (let i = 0; i < payload.length; i++) payload[i]! ^= key[i & 3]!;
  return Buffer.concat([head, key, payload]);
}

/**
 * Follows the frame boundaries of one direction of a WebSocket: reads each frame's header (2 to 14
 * bytes) and skips its payload, nothing else (no unmasking, no buffering), so that a close frame can be
 * put in between two frames.
 */
export class FrameCursor {
  /** payload bytes of the current frame still to come */
  private left = 0;
  private readonly head = Buffer.alloc(14);
  private have = 0;
  private need = 2;

  get atBoundary(): boolean {
    return this.left === 0 && this.have === 0;
  }

  /**
   * Moves over `chunk`. With `stop`, returns the offset just after the first frame that ends within
   * it (the bytes up to there can go on, then a frame of the gateway's); otherwise, or when none ends
   * in it, -1.
   */
  advance(chunk: Buffer, stop = false): number {
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      if (this.left > 0) {
        const take = Math.min(this.left, n - i);
        this.left -= take;
        i += take;
        if (this.left === 0 && stop) return i;
        continue;
      }
      this.head[this.have++] = chunk[i++]!;
      if (this.have === 2) {
        const b1 = this.head[1]!;
        const len7 = b1 & 127;
        this.need = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (b1 & 128 ? 4 : 0);
      }
      if (this.have >= 2 && this.have === this.need) {
        const len7 = this.head[1]! & 127;
        this.left = len7 === 126 ? this.head.readUInt16BE(2) : len7 === 127 ? Number(this.head.readBigUInt64BE(2)) : len7;
        this.have = 0;
        this.need = 2;
        if (this.left === 0 && stop) return i;
      }
    }
    return -1;
  }
}

/** One direction of a tunnel: src's bytes to dst, with backpressure, until a close frame of the gateway's. */
export class Pipe {
  private readonly frames = new FrameCursor();
  private closing: Buffer | undefined;
  /** the gateway's close frame went out: nothing more is passed on */
  done = false;

  constructor(
    private readonly src: Socket,
    private readonly dst: Socket,
  ) {
    src.on('data', (chunk: Buffer) => this.data(chunk));
    dst.on('drain', () => src.resume());
  }

  data(chunk: Buffer): void {
    if (this.done || chunk.length === 0) return;
    if (this.closing) {
      const end = this.frames.advance(chunk, true);
      if (end < 0) {
        this.dst.write(chunk);
        return;
      }
      if (end > 0) this.dst.write(chunk.subarray(0, end));
      this.finish();
      return;
    }
    this.frames.advance(chunk);
    if (!this.dst.write(chunk)) this.src.pause();
  }

  /** Sends `frame` at the next frame boundary (now, when between two frames), then ends dst. */
  closeWith(frame: Buffer): void {
    if (this.done || this.closing) return;
    this.closing = frame;
    if (this.frames.atBoundary) this.finish();
    else this.src.resume();
  }

  private finish(): void {
    this.done = true;
    if (this.dst.writable) this.dst.end(this.closing!);
  }
}
