import http from 'node:http';

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: any;
}

/**
 * One HTTP request sent exactly as given (fetch would normalise the path: "..", "%2e%2e").
 * `headers` may be an array of [name, value] pairs to send repeated or odd-cased headers.
 */
export function request(
  base: string,
  opts: { method?: string; path?: string; headers?: Record<string, string | string[]> | Array<[string, string]>; body?: string } = {},
): Promise<Reply> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: u.hostname,
      port: u.port,
      method: opts.method ?? 'GET',
      path: opts.path ?? '/',
      agent: false,
      // As an array, Node sends the headers exactly as given, without adding Host.
      headers: Array.isArray(opts.headers)
        ? [...(opts.headers.some(([k]) => k.toLowerCase() === 'host') ? [] : ['Host', u.host]), ...opts.headers.flat()]
        : opts.headers,
    } as http.RequestOptions);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json: any;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode!, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}
