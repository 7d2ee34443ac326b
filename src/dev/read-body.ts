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

/** A JSON object body (up to `limit` bytes); undefined when it is too large, not JSON or not an object. */
export function readJson(req: http.IncomingMessage, limit: number, then: (body: Record<string, unknown> | undefined) => void): void {
  readBody(req, limit, (raw, tooLarge) => {
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      return then(undefined);
    }
    then(tooLarge || !body || typeof body !== 'object' || Array.isArray(body) ? undefined : (body as Record<string, unknown>));
  });
}
