import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';

/** Throughput with autocannon when wrk is not installed. Prints JSON like load.ts expects. */
const o = JSON.parse(process.argv[2]!) as { url: string; connections: number; seconds: number; headers?: Record<string, string>; tokensFile?: string; login?: boolean };
const tokens = o.tokensFile ? readFileSync(o.tokensFile, 'utf8').split('\n').filter(Boolean) : [];
let n = 0;
const result = await autocannon({
  url: o.url,
  connections: o.connections,
  duration: o.seconds,
  headers: o.headers,
  ...(o.login ? { method: 'POST' as const, headers: { 'content-type': 'application/json' } } : {}),
  requests: [
    {
      // autocannon's typings want its own Request type; the shape we return is the one it documents.
      setupRequest: ((req: Record<string, unknown>) => {
        if (o.login) return { ...req, body: JSON.stringify({ code: `c${++n}.${Math.random().toString(36).slice(2)}` }) };
        if (tokens.length) return { ...req, headers: { ...(req.headers as object), authorization: `Bearer ${tokens[Math.floor(Math.random() * tokens.length)]}` } };
        return req;
      }) as unknown as autocannon.Request['setupRequest'],
    },
  ],
});
process.stdout.write(
  JSON.stringify({ rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, errors: result.errors + result.timeouts + result.non2xx }),
);
