import { z } from 'zod';
import { duration, httpUrl, whole } from '../values.js';

/**
 * events: login events for upstreams (a webhook): user.created, session.created, session.revoked,
 * POSTed as signed JSON, retried with backoff, never in the way of a login. Off unless configured.
 */
export const events = z
  .strictObject({
    url: httpUrl,
    /** HMAC-SHA256 key of the X-Wxgate-Signature header; read it from the environment: ${WXGATE_EVENTS_SECRET}. */
    secret: z.string({ error: 'is required (use ${WXGATE_EVENTS_SECRET})' }).min(16, { error: 'must be at least 16 characters' }),
    /** Per delivery attempt. */
    timeout: duration().prefault('5s'),
    /** Attempts per event before it is given up (counted, logged). */
    attempts: whole().min(1).max(30).default(8),
    /** Wait before the first retry; doubled each time (±20%), up to 5 minutes. */
    backoff: duration().prefault('1s'),
    /** Events waiting (new or to retry) per replica; beyond it new events are dropped (counted). */
    queue: whole().min(1).max(1_000_000).default(10_000),
    /** How long an openid or unionid counts as seen for user.created (one small Redis key each). */
    seenTtl: duration(1000).prefault('400d'),
  })
  .optional();

/** audit: the login audit trail (admin API: GET /users/…/events), the per-user history in the store. */
export const audit = z
  .strictObject({
    /** Entries of each user's audit history kept in the store (GET /users/…/events); 0 = none (the audit log lines stay). */
    history: whole().min(0).max(1000).default(50),
    /** How long a user's history lives after its latest entry. */
    historyKeep: duration(60_000).prefault('30d'),
  })
  .prefault({});
