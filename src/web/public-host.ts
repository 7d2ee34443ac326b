import type { Context } from 'koa';

/** The host (and port) the browser used: a proxy's X-Forwarded-Host, else Host; lower-cased. Never trusted for anything but hints. */
function requestHost(ctx: Context): string {
  const forwarded = ctx.get('x-forwarded-host').split(',')[0]!.trim();
  return (forwarded || ctx.get('host')).toLowerCase();
}

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/;

/** "host" and "port" of a Host header value, the port made explicit from the scheme's default. */
function splitHost(value: string, protocol: string): { name: string; port: string } | undefined {
  const m = /^(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::(\d{1,5}))?$/.exec(value);
  if (!m) return undefined;
  return { name: m[1]!, port: m[2] ?? (protocol === 'https:' ? '443' : '80') };
}

/**
 * When the browser reached the gateway by another name than web.publicUrl's, the state cookie set at
 * authorize lives on that name and never comes back to the callback (which WeChat sends to publicUrl):
 * the login would end in state_invalid. `sameListener` is true when both names are loopback names of
 * the same port (localhost vs 127.0.0.1 in development): the same gateway, so sending the browser to
 * publicUrl first is safe and cannot loop; behind a proxy (another port, a real name) it is never done.
 */
export function hostMismatch(ctx: Context, publicUrl: string): { host: string; sameListener: boolean } | undefined {
  const pub = new URL(publicUrl);
  const host = requestHost(ctx);
  if (host === '' || host === pub.host) return undefined;
  const got = splitHost(host, pub.protocol);
  const want = splitHost(pub.host, pub.protocol);
  if (got && want && got.name === want.name && got.port === want.port) return undefined;
  const sameListener = !!got && !!want && got.port === want.port && LOOPBACK.test(got.name) && LOOPBACK.test(want.name) && ctx.get('x-forwarded-host') === '';
  return { host: got ? host : '(not a host name)', sameListener };
}

