/** The kinds of value the configuration's sections are made of, each with the message its key gets. */
import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { parseDuration } from './duration.js';

/** A duration string with a unit, turned into milliseconds. */
export const duration = (min = 1) =>
  z
    .string({ error: 'must be a duration with a unit, e.g. "500ms", "2s", "2h", "30d"' })
    .transform((text, ctx) => {
      const ms = parseDuration(text);
      if (ms === undefined) {
        ctx.addIssue({ code: 'custom', message: 'must be a duration with a unit, e.g. "500ms", "2s", "2h", "30d"' });
        return z.NEVER;
      }
      if (ms < min) {
        ctx.addIssue({ code: 'custom', message: `must be at least ${min}ms` });
        return z.NEVER;
      }
      return ms;
    });

const SIZE = /^(\d+)(b|kb|mb)$/i;
/** A size string ("4kb", "1mb"), turned into bytes. */
export const size = z
  .string({ error: 'must be a size such as "4kb" or "1mb"' })
  .transform((text, ctx) => {
    const m = SIZE.exec(text.trim());
    if (!m) {
      ctx.addIssue({ code: 'custom', message: 'must be a size such as "4kb" or "1mb"' });
      return z.NEVER;
    }
    const unit = m[2]!.toLowerCase();
    return Number(m[1]) * (unit === 'mb' ? 1024 * 1024 : unit === 'kb' ? 1024 : 1);
  });

/**
 * A whole number. multipleOf(1) rather than .int(): zod's .int() failure stops every later check of
 * the enclosing objects, the cross-checks among them, which would then be missing from the list.
 */
export const whole = (error = 'must be a whole number') => z.number({ error }).multipleOf(1, { error });

/** A port; digits in a string are taken too, so a port may come from the environment (`port: ${PORT:-8080}`). */
export const port = z.preprocess(
  (v) => (typeof v === 'string' && /^\d{1,5}$/.test(v) ? Number(v) : v),
  z
    .number({ error: 'must be a port number' })
    .multipleOf(1, { error: 'must be a port number (0-65535)' })
    .min(0, { error: 'must be a port number (0-65535)' })
    .max(65535, { error: 'must be a port number (0-65535)' }),
);
export const host = z.string().min(1);

/** A string that is required and secret: the message says how to keep it out of the file. */
export const secret = (error = 'is required (use ${ENV_NAME} to read it from the environment)') =>
  z.string({ error }).min(1, { error: 'must not be empty' });

const parsesAs = (test: (u: URL) => boolean) => (s: string) => {
  try {
    return test(new URL(s));
  } catch {
    return false;
  }
};

export const httpUrl = z
  .string({ error: 'must be an http(s) URL' })
  .refine(parsesAs((u) => (u.protocol === 'http:' || u.protocol === 'https:') && !u.username && !u.password && !u.hash), { error: 'must be an http(s) URL' });

export const redisUrl = z
  .string({ error: 'must be a redis:// or rediss:// URL' })
  .refine(parsesAs((u) => u.protocol === 'redis:' || u.protocol === 'rediss:'), { error: 'must be a redis:// or rediss:// URL' });

/** An origin: scheme, host and port only ("https://m.example.com"). */
export const origin = z
  .string({ error: 'must be an origin such as "https://m.example.com"' })
  .refine((s) => parsesAs((u) => (u.protocol === 'http:' || u.protocol === 'https:') && u.origin === s.replace(/\/$/, ''))(s), {
    error: 'must be an origin such as "https://m.example.com" (scheme, host and port; no path, query or credentials)',
  });

/** One of the gateway's own paths ("/login"). */
export const endpointPath = z.string().regex(/^\/[A-Za-z0-9._~\-/]*$/, { error: 'must be an absolute path such as "/login"' });

export const appid = z.string().regex(/^wx[0-9a-zA-Z]{16}$/, { error: 'must be a WeChat appid: "wx" and 16 letters or digits' });

const CIDR_EXAMPLE = 'must be an IP address or CIDR range, e.g. "10.0.0.0/8" or "fd00::/8"';

/** An IP address or a CIDR range, as proxy-addr takes it (IPv4 in dotted decimal; no netmask form). */
export const cidr = z.string({ error: CIDR_EXAMPLE }).superRefine((s, ctx) => {
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  const v4 = ipaddr.IPv4.isValidFourPartDecimal(addr);
  if (!v4 && !ipaddr.IPv6.isValid(addr)) {
    ctx.addIssue({ code: 'custom', message: `${CIDR_EXAMPLE} ("${addr}" is not an IP address)` });
  } else if (slash >= 0 && !validCidr(s)) {
    ctx.addIssue({ code: 'custom', message: `${CIDR_EXAMPLE} (the prefix length after "/" is 0-${v4 ? 32 : 128} for an IPv${v4 ? 4 : 6} address)` });
  }
});

function validCidr(s: string): boolean {
  try {
    ipaddr.parseCIDR(s);
    return true;
  } catch {
    return false;
  }
}
