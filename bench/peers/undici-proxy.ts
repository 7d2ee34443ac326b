import http from 'node:http';
import { Pool } from 'undici';

/** A minimal undici-based proxy (what @fastify/http-proxy builds on): how much our stack leaves on the table. */
const [port, target] = [Number(process.argv[2]), process.argv[3]!];
const pool = new Pool(target, { connections: 128, pipelining: 1 });
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'proxy-authorization', 'host']);

http
  .createServer((req, res) => {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (!HOP.has(k) && typeof v === 'string') headers[k] = v;
    pool
      .stream(
        { path: req.url!, method: req.method as 'GET', headers, body: req.method === 'GET' || req.method === 'HEAD' ? null : req },
        ({ statusCode, headers: h }) => {
          const out: Record<string, string | string[]> = {};
          for (const [k, v] of Object.entries(h)) if (!HOP.has(k) && v !== undefined) out[k] = v;
          res.writeHead(statusCode, out);
          return res;
        },
      )
      .catch(() => {
        if (!res.headersSent) res.writeHead(502);
        res.end();
      });
  })
  .listen(port, '127.0.0.1');

// a clean exit on SIGTERM, so `node --cpu-prof` writes its profile
process.on('SIGTERM', () => process.exit(0));
