import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import test from 'ava';
import { exited, runCli, spawnGateway, testConfig } from './helpers/gateway.js';
import { startUpstream } from './helpers/upstream.js';
import { waitFor } from './helpers/wait.js';

/**
 * server.tls: HTTPS on the main listener from PEM files, read again at every reload (SIGHUP), so a
 * renewed certificate is served to new connections without a restart; a pair that does not load is
 * refused and the old one keeps serving. Certificates are made with openssl (on PATH, like redis-server).
 */
function makeCert(dir: string, name: string): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${name}`, '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  return { cert, key };
}

/** GET over https trusting `ca`: the status, the body and the certificate's CN the server showed. */
function get(url: string, path: string, ca: Buffer[]): Promise<{ status: number; body: string; cn: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(`${url}${path}`, { ca, agent: false }, (res) => {
      const cn = String((res.socket as TLSSocket).getPeerCertificate().subject?.CN ?? '');
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode!, body, cn }));
    });
    req.on('error', reject);
  });
}


test('server.tls: HTTPS on the main listener; SIGHUP serves a renewed certificate to new connections, a bad one is refused and the old one kept', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'wxgate-tls-'));
  const live = { cert: join(dir, 'live.crt'), key: join(dir, 'live.key') };
  const first = makeCert(dir, 'first');
  const second = makeCert(dir, 'second');
  const install = (pair: { cert: string; key: string }) => {
    writeFileSync(live.key, readFileSync(pair.key));
    writeFileSync(live.cert, readFileSync(pair.cert));
  };
  install(first);
  const ca = [readFileSync(first.cert), readFileSync(second.cert)];
  const up = await startUpstream();
  t.teardown(() => up.close());

  const gw = await spawnGateway(
    testConfig({ apiBase: 'http://127.0.0.1:1', routes: [{ path: '/pub', upstream: up.url, auth: 'none' }], server: { host: '127.0.0.1', port: 0, tls: live } }),
    { WXGATE_WATCH: '0' },
  );
  t.teardown(() => gw.stop());
  t.regex(gw.url, /^https:\/\/127\.0\.0\.1:\d+$/, 'the listening line says https');

  const a = await get(gw.url, '/healthz', ca);
  t.is(a.status, 200);
  t.is(a.cn, 'first');
  const proxied = await get(gw.url, '/pub/x', ca);
  t.is(proxied.status, 200);
  t.is(up.seen.at(-1)?.headers['x-forwarded-proto'], 'https', 'upstreams see the request came over https');

  // renewed (certbot and the like write new files, then reload)
  install(second);
  gw.child.kill('SIGHUP');
  await waitFor(async () => (await get(gw.url, '/healthz', ca)).cn === 'second', { interval: 50, message: 'a new connection gets the renewed certificate' });

  // a broken pair: the key of another certificate
  writeFileSync(live.key, readFileSync(first.key));
  const before = gw.stdout.length;
  gw.child.kill('SIGHUP');
  await waitFor(() => gw.stdout.slice(before).some((l) => l.includes('config reload rejected') && l.includes('server.tls')), { message: 'the reload is refused, naming server.tls' });
  t.is((await get(gw.url, '/healthz', ca)).cn, 'second', 'the old certificate keeps serving');
  t.false(gw.stdout.concat(gw.stderr).join('\n').includes('PRIVATE KEY'), 'no key material in the log');
  t.is(await gw.stop(), 0);
});

test('server.tls: a certificate that cannot be read stops the start with exit 1, naming the key and the file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'wxgate-tls-'));
  const pair = makeCert(dir, 'ok');
  const cases: Array<[{ cert: string; key: string }, RegExp]> = [
    [{ cert: join(dir, 'missing.crt'), key: pair.key }, /server\.tls\.cert: cannot read .*missing\.crt: ENOENT/],
    [{ cert: pair.cert, key: pair.cert }, /server\.tls: .* are not a certificate \(PEM\) and its private key/],
  ];
  for (const [tls, re] of cases) {
    const file = join(dir, 'gateway.json');
    writeFileSync(file, JSON.stringify(testConfig({ apiBase: 'http://127.0.0.1:1', server: { host: '127.0.0.1', port: 0, tls } })));
    const child = runCli(['--config', file]);
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const [code] = await exited(child);
    t.is(code, 1, err);
    t.regex(err, re);
  }
});
