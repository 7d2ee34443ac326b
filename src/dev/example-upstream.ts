import http from 'node:http';

/**
 * A tiny business service for trying the gateway: answers every request with what it received,
 * so you can see the identity headers the gateway set. Dev only.
 */
export function createExampleUpstream(): http.Server {
  return http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.stringify(
        {
          service: 'example-upstream',
          method: req.method,
          url: req.url,
          openid: req.headers['x-openid'] ?? null,
          unionid: req.headers['x-unionid'] ?? null,
          appid: req.headers['x-appid'] ?? null,
          headers: req.headers,
          body: Buffer.concat(chunks).toString('utf8'),
        },
        null,
        2,
      );
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
}
