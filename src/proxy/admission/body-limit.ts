import type { IncomingMessage, ServerResponse } from 'node:http';
import { GatewayError } from '../../base/errors.js';
import { sendError } from '../../base/error-answer.js';
import type { Logger } from '../../base/logger.js';

/**
 * routes[].bodyLimit: a declared Content-Length over the limit is refused before anything is sent on.
 * A chunked body is counted as it streams: the chunk that crosses the limit is not passed on, and the
 * client gets 413 if no answer has begun (then, as after a begun one, its connection is closed, which
 * aborts the upstream request, so the upstream never sees a complete request).
 */
export function checkBodyLimit(req: IncomingMessage, res: ServerResponse, limit: number, log: Logger, route: string): void {
  const message = `The request body is larger than ${limit} bytes.`;
  const length = req.headers['content-length'];
  if (length !== undefined) {
    // node's parser has refused malformed and conflicting lengths already
    if (Number(length) > limit) throw new GatewayError('payload_too_large', { message, headers: { Connection: 'close' } });
    return;
  }
  if (req.headers['transfer-encoding'] === undefined) return;
  let received = 0;
  const push = req.push;
  req.push = function (this: IncomingMessage, chunk: unknown, encoding?: BufferEncoding): boolean {
    if (received > limit) return true; // over the limit: nothing more goes on, not even the end
    if (chunk !== null && chunk !== undefined) {
      received += (chunk as Buffer).length;
      if (received > limit) {
        if (!res.headersSent) sendError(req, res, new GatewayError('payload_too_large', { message, headers: { Connection: 'close' } }), log, route);
        // before the answer counts as finished: the proxy sees a client gone and drops the upstream request
        req.destroy();
        return true;
      }
    }
    return push.call(this, chunk, encoding);
  };
}
