import http from 'node:http';

/** The business service every target proxies to: a small JSON answer; /slow waits (for the soak). */
const port = Number(process.argv[2]);
// the same as bench/lib/setup.ts's UPSTREAM_BODY, which nginx answers with BENCH_UPSTREAM=nginx
const body = JSON.stringify({ ok: true, items: [1, 2, 3], note: 'a small JSON answer from the upstream' });
http
  .createServer((req, res) => {
    const send = () => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    req.resume();
    if (req.url?.includes('/slow')) {
      // headers and half the body at once, the rest 200 ms later: a client can leave mid-response
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.write(body.slice(0, 10));
      const t = setTimeout(() => res.end(body.slice(10)), 200);
      res.on('close', () => clearTimeout(t));
    } else send();
  })
  .listen(port, '127.0.0.1');
