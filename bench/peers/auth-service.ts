import { createHash } from 'node:crypto';
import http from 'node:http';
import { Redis } from 'ioredis';

/**
 * The do-it-yourself way: nginx `auth_request` to this small service, which looks the token up in Redis
 * (the gateway's own key layout, so the same tokens work: the user's hash `u:{the token's first 16
 * characters}`, the session's field = the first 128 bits of the token's SHA-256) and answers 200 with
 * X-Openid, or 401. (Deadlines are left to Redis's key expiry: a do-it-yourself check would.)
 */
const [port, redisUrl, prefix] = [Number(process.argv[2]), process.argv[3]!, process.argv[4] ?? 'wxgate:'];
const redis = new Redis(redisUrl);
// An ioredis client needs an error listener, or every failed reconnect prints "[ioredis] Unhandled error
// event" (the bench kills Redis first at the end of a run, and npm test ended with that line). A lookup
// that fails answers 401, which the bench counts as an error: nothing is hidden by staying quiet here.
redis.on('error', () => {});
http
  .createServer(async (req, res) => {
    const m = /^Bearer ([A-Za-z0-9_-]{59})$/.exec(req.headers.authorization ?? '');
    if (!m) return res.writeHead(401).end();
    const token = m[1]!;
    const field = createHash('sha256').update(token).digest().subarray(0, 16).toString('base64url');
    const [v, who] = await redis.hmget(`${prefix}u:${token.slice(0, 16)}`, field, 'w').catch(() => [null, null]);
    if (!v || !who) return res.writeHead(401).end();
    const [appid, openid] = who.split('\t');
    res.writeHead(200, { 'x-openid': openid!, 'x-appid': appid! }).end();
  })
  .listen(port, '127.0.0.1');
