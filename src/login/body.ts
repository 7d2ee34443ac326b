import type { Context, Next } from 'koa';
import getRawBody from 'raw-body';
import type { z } from 'zod';
import { GatewayError } from '../base/errors.js';

/** Reads a small JSON object body, with a byte limit: 413 over it, 415 for other types, 400 for bad JSON. */
export async function readJsonObject(ctx: Context, limit: number): Promise<Record<string, unknown>> {
  const type = ctx.request.headers['content-type'];
  if (type !== undefined && !/^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i.test(type)) {
    throw new GatewayError('unsupported_media_type');
  }
  let text: string;
  try {
    text = await getRawBody(ctx.req, { limit, length: ctx.request.headers['content-length'], encoding: 'utf8' });
  } catch (err) {
    const e = err as { type?: string; status?: number };
    if (e.type === 'entity.too.large') throw new GatewayError('payload_too_large', { message: `The request body is larger than ${limit} bytes.` });
    throw new GatewayError('bad_request', { message: 'The request body could not be read.', cause: err });
  }
  if (text.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new GatewayError('invalid_json');
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    throw new GatewayError('invalid_json', { message: 'The body must be a JSON object.' });
  }
  return value as Record<string, unknown>;
}

/**
 * The one validation step of the own endpoints' JSON bodies: the body read as a JSON object (as above),
 * then checked against its schema from the endpoint table; the first problem is the answer, 400
 * invalid_request with its message. The handler finds the parsed body in ctx.state.body. `optional`: a
 * request without a body counts as {}.
 */
export function validBody(schema: z.ZodType, limit: number, optional = false) {
  return async function validBody(ctx: Context, next: Next): Promise<void> {
    const hasBody = ctx.request.length > 0 || ctx.get('transfer-encoding') !== '';
    const parsed = schema.safeParse(optional && !hasBody ? {} : await readJsonObject(ctx, limit));
    if (!parsed.success) throw new GatewayError('invalid_request', { message: parsed.error.issues[0]!.message });
    ctx.state.body = parsed.data;
    await next();
  };
}
