import { z } from 'zod';
import { host, port } from '../values.js';

/** admin: the admin API, on its own listener; off unless configured. */
export const admin = z
  .strictObject({
    port,
    host: host.default('127.0.0.1'),
    /** Bearer secret for the admin API; read it from the environment: ${WXGATE_ADMIN_TOKEN}. */
    token: z.string({ error: 'is required (use ${WXGATE_ADMIN_TOKEN})' }).min(24, { error: 'must be at least 24 characters' }),
    /**
     * Revoking a user (or a person) on the admin API also resets their session_key at WeChat
     * (wxa/resetusersessionkey), so data made with it no longer opens anywhere.
     */
    resetSessionKey: z.boolean({ error: 'must be true or false' }).default(false),
  })
  .optional();

/** dev: development helpers. Never set these in production. */
export const dev = z
  .strictObject({
    /** Run the built-in WeChat simulator and send logins to it instead of WeChat. */
    simulator: z.boolean().default(false),
    simulatorPort: port.default(9100),
    /** Run a small echo service that shows the headers it received. */
    exampleUpstream: z.boolean().default(false),
    exampleUpstreamPort: port.default(9001),
  })
  .prefault({});
