import { ALWAYS, NO_STORE, page, STRING, type DocContext } from './docs.js';
import type { OwnEndpoint } from './table.js';
import { ticketRows } from './tickets.js';

/** web.mpQr's rows: the PC page's tickets and long poll, and the server URL WeChat pushes to. */
export function mpQrEndpoints(c: DocContext, q: NonNullable<NonNullable<DocContext['web']>['mpQr']>): OwnEndpoint[] {
  const signed = [
    { name: 'signature', in: 'query', required: true, description: 'sha1 of the sorted web.mpQr.token, timestamp and nonce.', schema: { type: 'string', pattern: '^[0-9a-fA-F]{40}$' } },
    { name: 'timestamp', in: 'query', required: true, description: 'Seconds; at most 5 minutes from the gateway\'s clock.', schema: { type: 'string', pattern: '^[0-9]{1,12}$' } },
    { name: 'nonce', in: 'query', required: true, schema: STRING },
  ];
  const text = (description: string) => ({ description, headers: { 'Cache-Control': NO_STORE }, content: { 'text/plain': { schema: STRING } } });
  const rows = ticketRows(c, {
    prefix: '/qr',
    route: 'mpqr',
    handlers: ['mpQrCreate', 'mpQrWait'],
    ids: ['mpQrCreateTicket', 'mpQrWait'],
    summaries: [
      'Follow-QR login: a ticket and its Official Account QR code, for the PC page',
      'The PC page waits for the follow or scan (long poll); then it gets its own session cookie',
    ],
    description: 'A temporary QR code (cgi-bin/qrcode/create, QR_STR_SCENE, scene = the ticket). The user scans it in WeChat and follows the Official Account (or, following already, scans): WeChat tells the gateway, and the page\'s long poll gets the session. The secret is for this PC page only (X-Scan-Secret).',
    ticket: 'MpQrTicket',
    idParam: 'The ticket.',
    waitParams: [],
    waiting: 'Still waiting, or confirmed: then the session cookie is set.',
    waitErrors: ['ticket_not_found', 'ticket_used', 'ticket_expired'],
  });
  if (q.demo) {
    rows.push({
      method: 'GET', path: '/qr/demo', route: 'mpqr', handler: 'mpQrDemo', html: true,
      doc: {
        id: 'mpQrDemo', tag: 'mpqr', summary: 'A demo PC page for follow-QR login',
        responses: { '200': page('The page (its only outside resource is the QR image at WeChat; a strict CSP with a nonce per answer).') },
        errors: ['internal_error'],
      },
    });
  }
  rows.push(
    {
      method: 'GET', path: q.eventsPath, route: 'mp_events', handler: 'mpEventsVerify',
      doc: {
        id: 'mpEventsVerify', tag: 'mpqr', summary: 'WeChat checks the server URL (服务器配置): signed, it gets echostr back',
        parameters: [...signed, { name: 'echostr', in: 'query', required: true, schema: STRING }],
        responses: { '200': text('echostr, as it came.') },
        errors: ['bad_request', 'mp_signature_invalid', 'mp_replayed', ...ALWAYS],
      },
    },
    {
      method: 'POST', path: q.eventsPath, route: 'mp_events', handler: 'mpEventsPush',
      doc: {
        id: 'mpEventsPush', tag: 'mpqr', summary: 'WeChat pushes a message or event of the Official Account (subscribe / SCAN of a follow-QR code log the PC in)',
        description: 'Plaintext, or with encrypt_type=aes and msg_signature the safe mode envelope (web.mpQr.encrypt). Answered at once: "success", or with web.mpQr.reply after a login the text reply (encrypted like the push). A signature is good for one body; an event WeChat resends is acted on once and answered alike.',
        parameters: [
          ...signed,
          { name: 'encrypt_type', in: 'query', required: false, schema: { type: 'string', enum: ['aes', 'raw'] } },
          { name: 'msg_signature', in: 'query', required: false, description: 'With encrypt_type=aes: sha1 of the sorted token, timestamp, nonce and Encrypt.', schema: { type: 'string', pattern: '^[0-9a-fA-F]{40}$' } },
          { name: 'openid', in: 'query', required: false, schema: STRING },
        ],
        requestBody: { required: true, content: { 'text/xml': { schema: { type: 'string', description: 'WeChat\'s flat XML message, at most 64 kB.' } } } },
        responses: {
          '200': {
            description: '"success", or the passive reply XML.',
            headers: { 'Cache-Control': NO_STORE },
            content: { 'text/plain': { schema: { type: 'string', const: 'success' } }, 'application/xml': { schema: { type: 'string', pattern: '^<xml>' } } },
          },
        },
        errors: ['bad_request', 'mp_message_invalid', 'mp_signature_invalid', 'mp_replayed', 'payload_too_large', ...ALWAYS],
      },
    },
  );
  return rows;
}
