import { z } from 'zod';
import { live } from '../live.js';
import { cidr, duration, endpointPath, host, port, size, whole } from '../values.js';

/**
 * server: the main listener. A reload may change the client-side timeouts and limits, the trusted
 * proxies and the certificate files (the listener itself, its address and its parser's limits stay).
 */
export const server = z
  .strictObject({
    host: host.default('0.0.0.0'),
    port: port.default(8080),
    /** Peers whose X-Forwarded-For / -Proto / -Host are believed (load balancers). */
    trustedProxies: live(z.array(cidr).default([])),
    /** Largest request body accepted on the gateway's own JSON endpoints. */
    bodyLimit: live(size.prefault('4kb')),
    /** How long SIGTERM waits for in-flight requests before closing. */
    shutdownTimeout: live(duration().prefault('10s')),
    requestTimeout: live(duration().prefault('60s')),
    headersTimeout: live(duration().prefault('20s')),
    keepAliveTimeout: live(duration().prefault('5s')),
    /** Largest request head (request line and headers) node's parser accepts; beyond it node answers 431. */
    maxHeaderSize: size.refine((n) => n >= 1024, { error: 'must be at least 1kb' }).prefault('16kb'),
    /** Open client connections at most; node closes further ones at once (0 = no limit). */
    maxConnections: live(whole().min(0).default(10_000)),
    /** HTTPS on the main listener: PEM files of the certificate (chain) and its key, read at start and again at every reload. */
    tls: live(z.strictObject({ cert: z.string().min(1), key: z.string().min(1) }).optional(), 'while-set'),
    /** Gateway processes (node:cluster workers) sharing the listener: a number, or "auto" = available cores. */
    workers: z
      .union([whole().min(1).max(256), z.literal('auto')], { error: 'must be a number of workers (1-256) or "auto" (one per available core)' })
      .default(1),
  })
  .prefault({});

/** endpoints: the paths of the gateway's own endpoints; a reload may change them. */
export const endpoints = live(
  z
    .strictObject({
      login: endpointPath.default('/login'),
      session: endpointPath.default('/session'),
      logout: endpointPath.default('/logout'),
      healthz: endpointPath.default('/healthz'),
      readyz: endpointPath.default('/readyz'),
      /** POST: WeChat open data (encryptedData + iv) decrypted with the session's session_key. */
      decrypt: endpointPath.default('/wx/decrypt'),
      /** POST: a getPhoneNumber code → the user's phone number (wxa/business/getuserphonenumber). */
      phone: endpointPath.default('/wx/phone'),
      /** GET: the OpenAPI description of these endpoints. */
      openapi: endpointPath.default('/openapi.json'),
    })
    .prefault({}),
);
