import http from 'node:http';
import httpProxy from 'http-proxy';

/** The floor of our own stack: plain http-proxy over a keep-alive agent, no auth, no koa. */
const [port, target] = [Number(process.argv[2]), process.argv[3]!];
const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
const proxy = httpProxy.createProxyServer({ target, agent });
proxy.on('error', (_err, _req, res) => {
  if ('writeHead' in res && !res.headersSent) res.writeHead(502);
  res.end();
});
http.createServer((req, res) => proxy.web(req, res)).listen(port, '127.0.0.1');

// a clean exit on SIGTERM, so `node --cpu-prof` writes its profile
process.on('SIGTERM', () => process.exit(0));
