import { createHash } from 'node:crypto';
import http from 'node:http';
import { Redis } from 'ioredis';

/**
 * The do-it-yourself way: nginx `auth_request` to this small service, which looks the token up in Redis
 * (the gateway's own key layout, so the same tokens work) and answers 200 with X-Openid, or 401.
 */
const [port, redisUrl, prefix] = [Number(process.argv[2]), process.argv[3]!, process.argv[4] ?? 'wxgate:'];
const redis = new Redis(redisUrl);
http
  .createServer(async (req, res) => {
    const m = /^Bearer ([A-Za-z0-9_-]{43})$/.exec(req.headers.authorization ?? '');
    if (!m) return res.writeHead(401).end();
    const hash = createHash('sha256').update(m[1]!).digest().subarray(0, 24).toString('base64url');
    const v = await redis.get(`${prefix}s:${hash}`).catch(() => null);
    if (!v) return res.writeHead(401).end();
    const [appid, openid] = v.split('\t');
    res.writeHead(200, { 'x-openid': openid!, 'x-appid': appid! }).end();
  })
  .listen(port, '127.0.0.1');
