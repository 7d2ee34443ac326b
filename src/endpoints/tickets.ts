import type { ErrorCode } from '../base/errors.js';
import { ALWAYS, ok, ref, STRING, TICKET_ID, WAIT, WECHAT_ERRORS, type DocContext } from './docs.js';
import type { HandlerName, OwnEndpoint } from './table.js';

/** A PC login's two ticket rows (scan-to-login, follow-QR): POST <prefix>/tickets makes one, GET <prefix>/tickets/:id waits on it. */
export function ticketRows(
  c: DocContext,
  t: {
    prefix: '/scan' | '/qr';
    route: string;
    handlers: [HandlerName, HandlerName];
    ids: [string, string];
    summaries: [string, string];
    description: string;
    /** the answer's component schema */
    ticket: string;
    idParam: string;
    waitParams: object[];
    waiting: string;
    waitErrors: ErrorCode[];
  },
): OwnEndpoint[] {
  const tag = t.route;
  return [
    {
      method: 'POST', path: `${t.prefix}/tickets`, route: t.route, handler: t.handlers[0], limit: t.prefix === '/scan' ? 'scan' : 'qr',
      doc: {
        id: t.ids[0], tag, summary: t.summaries[0], description: t.description,
        responses: { '201': ok('A new ticket.', ref(t.ticket)) },
        errors: [...c.rateLimited, ...WECHAT_ERRORS, ...ALWAYS],
      },
    },
    {
      method: 'GET', path: `${t.prefix}/tickets/:id`, route: t.route, handler: t.handlers[1],
      doc: {
        id: t.ids[1], tag, summary: t.summaries[1],
        parameters: [
          { name: 'id', in: 'path', required: true, description: t.idParam, schema: TICKET_ID },
          WAIT,
          ...t.waitParams,
          { name: 'X-Scan-Secret', in: 'header', required: true, description: `The ticket's secret from POST ${t.prefix}/tickets.`, schema: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$' } },
        ],
        responses: {
          '200': ok(t.waiting, ref('ScanWait'), {
            'Set-Cookie': { description: `With status "confirmed": the session cookie \`${c.cookies!.session}\`.`, required: false, schema: STRING },
          }),
        },
        errors: [...t.waitErrors, ...ALWAYS],
      },
    },
  ];
}
