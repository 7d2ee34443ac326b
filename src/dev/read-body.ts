import type http from 'node:http';

/** The simulator's request bodies: read whole, up to `limit` bytes kept; `tooLarge` when more came. */
export function readBody(req: http.IncomingMessage, limit: number, then: (body: Buffer, tooLarge: boolean) => void): void {
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (c: Buffer) => {
    size += c.length;
    if (size <= limit) chunks.push(c);
  });
  req.on('end', () => then(Buffer.concat(chunks), size > limit));
}
