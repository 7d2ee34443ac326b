/**
 * npm run bench:micro — nanoseconds per call of three pieces of the proxied path, each beside the way
 * it was done before (BENCHMARKS.md, "Two deletes, the token's hash"):
 *
 * - the token's hash (src/session/tokens.ts): hashToken against its code before (the digest as a Buffer),
 *   and hashOnce, the proxy's, for a connection's same token again;
 * - a request's headers after a header is dropped by `delete` or by setting it undefined, then the
 *   gateway's headers added and the whole walked as the upstream client writes it (requestHead);
 * - a histogram observe (src/metrics/series.ts) with the bucket's property name made once, against a
 *   fractional number as the key.
 *
 * In process, one core, no load tool: the figures are the pieces' own, not a request's.
 */
import { hash, randomBytes } from 'node:crypto';
import { Histogram, Registry } from 'prom-client';
import { histogramSeries } from '../src/metrics/series.js';
import { hashOnce, hashToken } from '../src/session/tokens.js';

const N = Number(process.env.MICRO_N ?? 1_000_000);

function measure(name: string, f: (i: number) => unknown): number {
  for (let i = 0; i < N / 5; i++) f(i);
  const t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) f(i);
  const ns = Number(process.hrtime.bigint() - t) / N;
  console.log(`${name.padEnd(58)} ${ns.toFixed(0).padStart(6)} ns`);
  return ns;
}

/** hashToken before (967e279): the digest as a Buffer. */
function hashTokenBefore(token: string): string {
  const d = hash('sha256', token, 'buffer');
  d.copy(d, 12, 0, 16);
  d.write(token.slice(0, 16), 0, 12, 'base64url');
  return d.toString('base64url', 0, 28);
}
const tokens = Array.from({ length: 1024 }, () => randomBytes(44).toString('base64url'));
measure('token hash: before (the digest as a Buffer)', (i) => hashTokenBefore(tokens[i & 1023]!));
measure('token hash: hashToken (latin1 digest, scratch buffer)', (i) => hashToken(tokens[i & 1023]!));
// 64 kept-alive connections, each its user's token again and again (a copy: the next request's header is a new string)
const conns = Array.from({ length: 64 }, () => ({}));
const again = Array.from({ length: 64 }, (_, k) => ` ${tokens[k]!}`.slice(1));
measure('token hash: hashOnce (the same token again, its connection)', (i) => hashOnce(conns[i & 63]!, again[i & 63]!));

/** A request's headers as node's parser leaves them (keyed stores on a fresh object). */
function clientHeaders(i: number): Record<string, string | undefined> {
  const h: Record<string, string | undefined> = {};
  const raw = ['host', 'gw.example.com', 'connection', 'keep-alive', 'authorization', `Bearer ${tokens[i & 1023]}`, 'user-agent', 'MicroMessenger/8.0.50', 'accept', '*/*'];
  for (let k = 0; k < raw.length; k += 2) h[raw[k]!] = raw[k + 1];
  return h;
}
function proxied(h: Record<string, string | undefined>): string {
  h['x-forwarded-for'] = '10.0.0.1';
  h['x-forwarded-proto'] = 'http';
  h['x-forwarded-host'] = h.host;
  h['x-openid'] = 'o-user';
  h['x-appid'] = 'wx0123456789abcdef';
  h['x-request-id'] = '0b3d4f9e-6c1a-4e55-9d0a-2f1c1b7a9e21';
  let head = 'GET /api/items HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n';
  for (const name in h) {
    const v = h[name];
    if (v !== undefined) head += `${name}: ${v}\r\n`;
  }
  return head;
}
measure('headers: connection, authorization, host deleted', (i) => {
  const h = clientHeaders(i);
  delete h.connection;
  delete h.authorization;
  delete h.host;
  return proxied(h);
});
measure('headers: connection, authorization, host set undefined', (i) => {
  const h = clientHeaders(i);
  h.connection = undefined;
  h.authorization = undefined;
  h.host = undefined;
  return proxied(h);
});

const histogram = new Histogram({ name: 'micro_seconds', help: 'micro', labelNames: ['route'], registers: [new Registry()] });
const series = histogramSeries(histogram, { route: 'api' });
const cell = (histogram as unknown as { hashMap: Record<string, { bucketValues: Record<number, number>; sum: number; count: number }> }).hashMap;
const c = Object.values(cell)[0]!;
const bounds = (histogram as unknown as { upperBounds: number[] }).upperBounds;
const values = Array.from({ length: 1024 }, () => Math.random() * 0.004 + 0.0005);
measure('observe: a fractional number as the bucket key', (i) => {
  const v = values[i & 1023]!;
  c.sum += v;
  c.count += 1;
  for (let k = 0; k < bounds.length; k++) {
    if (v <= bounds[k]!) {
      c.bucketValues[bounds[k]!]! += 1;
      return;
    }
  }
});
measure('observe: histogramSeries (bucket names made once)', (i) => series.observe(values[i & 1023]!));
