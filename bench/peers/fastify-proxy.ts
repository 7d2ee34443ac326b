import proxy from '@fastify/http-proxy';
import Fastify from 'fastify';

/**
 * @fastify/http-proxy, as its README sets it up: fastify with its logger off, the plugin on every path,
 * @fastify/reply-from's undici pool to the upstream (kept alive). No auth: what a node team would reach
 * for instead of writing a proxy.
 */
const [port, target] = [Number(process.argv[2]), process.argv[3]!];
const app = Fastify({ logger: false });
await app.register(proxy, { upstream: target, undici: { connections: 512, pipelining: 1, keepAliveTimeout: 4_000 } });
await app.listen({ port, host: '127.0.0.1' });

// a clean exit on SIGTERM, so `node --cpu-prof` writes its profile
process.on('SIGTERM', () => process.exit(0));
