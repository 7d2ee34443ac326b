import { z } from 'zod';
import { ERRORS, type ErrorCode } from '../base/errors.js';
import { openDataFields } from './bodies.js';
import type { DocContext } from './docs.js';

/**
 * The answers' JSON shapes, in zod, by their name under the document's components.schemas (the
 * requests' are the table's `body` schemas). server/openapi.ts turns them into JSON Schema.
 */

const seconds = (description = 'Seconds.') => z.int().nonnegative().meta({ description });
const ticketId = (description: string) => z.string().regex(/^[A-Za-z0-9_-]{22}$/).meta({ description });

/** A PC login ticket's answer (scan-to-login, follow-QR): the same fields, its own descriptions and QR form. */
function ticket(id: string, expiresIn: string, qr: { pattern: RegExp; description: string }) {
  return z.strictObject({
    ticket: ticketId(id),
    secret: z.string().regex(/^[A-Za-z0-9_-]{43}$/).meta({ description: 'For this page only: send it as X-Scan-Secret.' }),
    expires_in: seconds(expiresIn),
    qr: z.string().regex(qr.pattern).meta({ description: qr.description }),
  });
}

export function answerSchemas(c: DocContext): Record<string, z.ZodType> {
  const openData = z.record(z.string(), z.unknown()).meta({ description: 'The decrypted open data, without its watermark.' });
  const token = z.string().regex(/^[A-Za-z0-9_-]{59}$/).meta({ description: 'Opaque; send it as `Authorization: Bearer <token>`.' });
  const schemas: Record<string, z.ZodType> = {
    Error: z
      .strictObject({
        error: z.enum(Object.keys(ERRORS) as [ErrorCode, ...ErrorCode[]]).meta({ description: 'A stable code, for programs.' }),
        message: z.string().meta({ description: 'What happened and what to do, for people.' }),
      })
      .meta({ description: 'Every error the gateway answers itself.' }),
    OpenDataFields: openDataFields(),
    Token: token,
    LoginResponse: z.strictObject({
      token,
      expires_in: seconds('Seconds the session lasts if unused (session.ttl); activity extends it up to session.maxAge.'),
      data: openData.optional(),
    }),
    Session: z.strictObject({
      openid: z.string().min(1),
      appid: z.enum([...new Set([...c.miniApps, ...c.webApps])] as [string, ...string[]]),
      unionid: z.string().min(1).optional(),
      expires_in: seconds(),
    }),
    DecryptResponse: z.strictObject({ data: openData }),
    PhoneNumber: z.strictObject({
      phoneNumber: z.string().meta({ description: 'With the country code for numbers outside mainland China.' }),
      purePhoneNumber: z.string().meta({ description: 'Without the country code.' }),
      countryCode: z.string(),
      source: z.enum(['wechat', 'kept']).meta({ description: 'wechat: WeChat was asked just now; kept: the number the user granted before, WeChat not asked.' }),
    }),
    Health: z.strictObject({ status: z.literal('ok') }),
    Ready: z.strictObject({ status: z.literal('ok'), store: z.enum([c.config.session.store]) }),
  };
  const web = c.web;
  if (web?.mpQr) {
    schemas.MpQrTicket = ticket('Single use; the QR code\'s scene.', 'Seconds the QR code and its ticket wait for the follow or scan (web.mpQr.ticketTtl).', {
      pattern: /^https?:\/\/[^?]+\/cgi-bin\/showqrcode\?ticket=/,
      description: 'The QR code image at WeChat (mp.weixin.qq.com/cgi-bin/showqrcode?ticket=…).',
    });
  }
  if (web?.scan || web?.mpQr) {
    schemas.ScanWait = z.xor([
      z.strictObject({ status: z.enum(['pending', 'scanned']) }),
      z.strictObject({ status: z.literal('confirmed'), expires_in: seconds() }),
    ]);
  }
  if (web?.scan) {
    schemas.ScanTicket = ticket('Single use; in the QR code.', 'Seconds the ticket waits for its scan and confirmation (web.scan.ticketTtl).', {
      pattern: /^data:image\/[a-z]+;base64,[A-Za-z0-9+/]+={0,2}$/,
      description: 'The mini-program code as a data: URL.',
    });
  }
  return schemas;
}
