import { z } from 'zod';
import { live } from '../live.js';
import { duration, whole } from '../values.js';

/** limits: what one client may ask for; a reload may change them. */
export const limits = live(
  z
    .strictObject({
      /**
       * POST /login per client IP (IPv6: per /64), a token bucket kept in the session store so replicas
       * and workers share it: `burst` logins at once, refilled at `perIp` per `window`.
       */
      login: z
        .strictObject({
          /** Logins per window per client IP, sustained (0 turns the limit off). README "Limits" has the reasoning. */
          perIp: whole().min(0).default(600),
          window: duration(1000).prefault('1m'),
          /** Logins one client IP may make at once after a quiet spell (the bucket's size); absent = perIp. */
          burst: whole().min(1).optional(),
        })
        .prefault({}),
      /**
       * POST /wx/phone: WeChat charges for each getuserphonenumber call. Within `window` of the user's
       * grant, a new code is answered with the number kept for the user, without calling WeChat (unless
       * the body says "force": true); 0 = every code goes to WeChat.
       */
      phone: z.strictObject({ window: duration(0).prefault('30d') }).prefault({}),
    })
    .prefault({}),
);
