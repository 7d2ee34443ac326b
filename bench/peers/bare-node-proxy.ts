import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net from 'node:net';
import { createRequire } from 'node:module';

/**
 * The floor of a node gateway: node's http server, and upstream connections read by node's own parser
 * (the design of src/proxy/upstream-client.ts) with nothing else: no auth, no header steps, no
 * metrics, no timeouts, no error handling beyond a 502. What wxgate costs above it is what its work
 * costs; what it costs above nginx is what node costs.
 */
const require = createRequire(import.meta.url);
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const { HTTPParser } = require('_http_common') as { HTTPParser: any };

const [port, target] = [Number(process.argv[2]), new URL(process.argv[3]!)];
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'proxy-authorization', 'host']);
const hostLine = `host: ${target.host}\r\n`;

interface Conn { socket: net.Socket; parser: any; res: ServerResponse | undefined; keep: boolean }
const idle: Conn[] = [];

function newConn(): Conn {
  const socket = net.connect(Number(target.port), target.hostname);
  socket.setNoDelay(true);
  const parser = new HTTPParser();
  parser.initialize(HTTPParser.RESPONSE, {}, 0, 0);
  const c: Conn = { socket, parser, res: undefined, keep: true };
  parser[HTTPParser.kOnHeadersComplete] = (_ma: number, _mi: number, headers: string[], _m: unknown, _u: unknown, status: number, _st: string, _up: boolean, keep: boolean) => {
    c.keep = keep;
    const out: string[] = [];
    for (let i = 0; i < headers.length; i += 2) if (!HOP.has(headers[i]!.toLowerCase())) out.push(headers[i]!, headers[i + 1]!);
    c.res!.writeHead(status, out);
    return 0;
  };
  parser[HTTPParser.kOnBody] = (b: Buffer) => { c.res!.write(b); };
  parser[HTTPParser.kOnMessageComplete] = () => {
    const res = c.res!;
    c.res = undefined;
    res.end();
    if (c.keep) idle.push(c); else socket.destroy();
  };
  socket.on('data', (d) => { const r = parser.execute(d); if (r instanceof Error) socket.destroy(r); });
  socket.on('error', () => {});
  socket.on('close', () => { const i = idle.indexOf(c); if (i >= 0) idle.splice(i, 1); if (c.res && !c.res.headersSent) { c.res.writeHead(502); c.res.end(); } });
  return c;
}

http
  .createServer((req: IncomingMessage, res: ServerResponse) => {
    const c = idle.pop() ?? newConn();
    c.res = res;
    let head = `${req.method} ${req.url} HTTP/1.1\r\n${hostLine}`;
    const raw = req.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) if (!HOP.has(raw[i]!.toLowerCase())) head += `${raw[i]}: ${raw[i + 1]}\r\n`;
    c.socket.write(head + '\r\n', 'latin1');
  })
  .listen(port, '127.0.0.1');

process.on('SIGTERM', () => process.exit(0));
