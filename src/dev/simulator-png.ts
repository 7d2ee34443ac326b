import { createHash } from 'node:crypto';
import { deflateSync } from 'node:zlib';

/** The simulator's images (getwxacodeunlimit, showqrcode): real PNGs with a QR look, drawn from a seed. */

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 as PNG (and zlib) compute it. */
export function crc32(data: Buffer): number {
  let c = 0xffffffff;
  for (const byte of data) c = CRC_TABLE[(c ^ byte) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

/**
 * A `size`×`size` 8-bit greyscale PNG: a white quiet zone around 29×29 black and white modules drawn
 * from the SHA-256 of `seed`, with three finder squares in the corners (a QR look; it does not scan).
 */
export function wxacodePng(seed: string, size: number): Buffer {
  const N = 29;
  const bits: boolean[] = [];
  for (let i = 0; bits.length < N * N; i++) {
    for (const byte of createHash('sha256').update(`${i}:${seed}`).digest()) {
      for (let b = 7; b >= 0; b--) bits.push(((byte >> b) & 1) === 1);
    }
  }
  const finder = (x: number, y: number): boolean | undefined => {
    for (const [ox, oy] of [[0, 0], [N - 7, 0], [0, N - 7]] as const) {
      const dx = x - ox;
      const dy = y - oy;
      if (dx >= -1 && dx <= 7 && dy >= -1 && dy <= 7) {
        if (dx < 0 || dy < 0 || dx > 6 || dy > 6) return false;
        const ring = Math.min(dx, dy, 6 - dx, 6 - dy);
        return ring !== 1;
      }
    }
    return undefined;
  };
  const quiet = Math.max(4, Math.floor(size / 16));
  const cell = (size - 2 * quiet) / N;
  const raw = Buffer.alloc((size + 1) * size, 0xff);
  for (let y = 0; y < size; y++) {
    const row = y * (size + 1);
    raw[row] = 0; // filter: none
    const my = Math.floor((y - quiet) / cell);
    if (my < 0 || my >= N) continue;
    for (let x = 0; x < size; x++) {
      const mx = Math.floor((x - quiet) / cell);
      if (mx < 0 || mx >= N) continue;
      const dark = finder(mx, my) ?? bits[my * N + mx]!;
      if (dark) raw[row + 1 + x] = 0;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // greyscale
  ihdr[10] = 0; // deflate
  ihdr[11] = 0; // adaptive filtering
  ihdr[12] = 0; // no interlace
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}
