import { hash, randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** A new opaque session token: 256 bits from the CSPRNG, base64url (43 characters). */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * What the store keys a session by (SHA-256, first 192 bits, base64url); the token itself is never stored.
 * One-shot crypto.hash() (no Hash object per request) into a buffer, encoded from it: a flat string, where
 * slicing the digest's encoding would keep the longer string alive behind every cached session's key.
 */
export function hashToken(token: string): string {
  return hash('sha256', token, 'buffer').toString('base64url', 0, 24);
}

const BEARER = /^Bearer +([A-Za-z0-9_-]{43})$/i;

/**
 * The token from `Authorization: Bearer <token>`, or undefined when the header is absent or not exactly
 * one well-formed token (wrong length, other characters, two tokens, padding). The scheme is
 * case-insensitive (RFC 7235). Tokens anywhere else (query string, other headers) are ignored.
 */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined || header.length > 200) return undefined;
  return BEARER.exec(header)?.[1];
}

/**
 * The request's Authorization header, every line of it, or undefined when absent or empty. Node keeps
 * only the first of repeated Authorization lines in req.headers, so a second one would pass unseen;
 * joined, two lines are never one well-formed token.
 */
export function authorizationOf(req: IncomingMessage): string | undefined {
  const first = req.headers.authorization;
  if (!first) return undefined;
  const raw = req.rawHeaders;
  let lines = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 13 && name.toLowerCase() === 'authorization') lines++;
  }
  return lines > 1 ? req.headersDistinct.authorization!.join(', ') : first;
}
