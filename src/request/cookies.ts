import type { IncomingHttpHeaders } from 'node:http';
import { parse, serialize } from 'cookie';

/**
 * The gateway's own browser cookies. On an https publicUrl every name carries the `__Host-` prefix
 * (Secure, Path=/, no Domain: no other host, not even a subdomain, can set or shadow it); on plain http
 * (development) the bare name, without Secure.
 *   session  the session token (HttpOnly, SameSite=Lax)
 *   state    binds an OAuth login to the browser that started it (HttpOnly, SameSite=Lax, short-lived)
 *   csrf     the double-submit token page scripts copy into X-CSRF-Token (readable by scripts)
 * They are credentials of the gateway: never passed to an upstream, and an upstream cannot set them.
 */
export class WebCookies {
  readonly secure: boolean;
  readonly session: string;
  readonly state: string;
  readonly csrf: string;
  /** every name above: what is stripped from requests to upstreams and from their Set-Cookie lines */
  readonly names: ReadonlySet<string>;

  constructor(publicUrl: string, baseName: string) {
    this.secure = new URL(publicUrl).protocol === 'https:';
    const prefix = this.secure ? '__Host-' : '';
    this.session = `${prefix}${baseName}`;
    this.state = `${prefix}${baseName}_state`;
    this.csrf = `${prefix}${baseName}_csrf`;
    this.names = new Set([this.session, this.state, this.csrf]);
  }

  /** One cookie's value from a Cookie header; cheap when the header does not mention it. */
  read(header: string | undefined, name: string): string | undefined {
    if (header === undefined || !header.includes(name)) return undefined;
    return parse(header)[name];
  }

  /** A Set-Cookie value. maxAge in seconds (0 deletes the cookie). */
  set(name: string, value: string, maxAge: number, opts: { httpOnly?: boolean } = {}): string {
    return serialize(name, value, { path: '/', httpOnly: opts.httpOnly ?? true, secure: this.secure, sameSite: 'lax', maxAge: Math.max(0, Math.floor(maxAge)) });
  }

  clear(name: string): string {
    return this.set(name, '', 0);
  }
}

/** The name of a Set-Cookie line's cookie (what comes before the first "="), trimmed. */
export function setCookieName(line: string): string {
  const eq = line.indexOf('=');
  return (eq < 0 ? line : line.slice(0, eq)).trim();
}

/**
 * Removes the gateway's cookies from the Cookie header a request takes to the upstream; the other
 * cookies pass as they were. Only parses when one of the names appears.
 */
export function stripOwnCookies(headers: IncomingHttpHeaders, names: ReadonlySet<string>): void {
  const header = headers.cookie;
  if (header === undefined) return;
  let mentioned = false;
  for (const n of names) if (header.includes(n)) mentioned = true;
  if (!mentioned) return;
  const kept = header
    .split(';')
    .map((p) => p.trim())
    .filter((p) => p !== '' && !names.has(setCookieName(p)));
  if (kept.length) headers.cookie = kept.join('; ');
  else headers.cookie = undefined;
}
