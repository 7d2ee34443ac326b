import { readFileSync } from 'node:fs';
import { z } from 'zod';
import type { Config } from '../config/schema.js';
import { ERRORS, type ErrorCode } from '../base/errors.js';
import { docContext, json, NO_STORE, ref, unbounded, type DocContext, type Obj } from '../endpoints/docs.js';
import { answerSchemas } from '../endpoints/schemas.js';
import { ownEndpoints, type OwnEndpoint } from '../endpoints/table.js';

/**
 * The OpenAPI 3.1 description of the gateway's own endpoints, as this configuration serves them, made
 * from the endpoint table (src/endpoints/): every operation lists the statuses its handler can answer,
 * each error status with the catalogue's codes it can carry (errors.ts); the JSON Schemas are the zod
 * schemas of the bodies and answers through z.toJSONSchema. Routes to upstreams are not described: they
 * are the upstreams' own. Nothing secret goes in (no app secrets, no state secret, no admin token, no
 * store address).
 */

let version: string | undefined;
/** The package's version (package.json sits two levels up from src/server and from dist/server). */
function packageVersion(): string {
  if (version === undefined) {
    try {
      version = String((JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown }).version ?? '0.0.0');
    } catch {
      version = '0.0.0';
    }
  }
  return version;
}

function errorResponse(status: number, codes: ErrorCode[], html: boolean): Obj {
  const headers: Obj = { 'Cache-Control': NO_STORE };
  if (codes.includes('unauthorized')) {
    headers['WWW-Authenticate'] = {
      description: 'With `unauthorized`: `Bearer realm="wxgate"`, and `error="invalid_token"` when a token was given.',
      required: codes.every((c) => c === 'unauthorized'),
      schema: { type: 'string', pattern: '^Bearer realm="wxgate"' },
    };
  }
  if (status === 429 || codes.includes('session_store_unavailable')) {
    headers['Retry-After'] = {
      description: 'Seconds to wait before retrying.',
      required: status === 429,
      schema: { type: 'string', pattern: '^[0-9]+$' },
    };
  }
  const schema = { allOf: [ref('Error'), { properties: { error: { enum: codes } } }] };
  return {
    description: codes.map((c) => `\`${c}\`: ${ERRORS[c].message}`).join('\n\n'),
    headers,
    content: {
      ...json(schema),
      ...(html ? { 'text/html': { schema: { type: 'string', description: 'The same error as a small page, for a browser that navigates here (Accept: text/html).' } } } : {}),
    },
  };
}

/** The error responses of an operation: its codes grouped by the catalogue's status. */
function errorResponses(codes: ErrorCode[], html = false): Obj {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of new Set(codes)) {
    const status = ERRORS[code].status;
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const out: Obj = {};
  for (const status of [...byStatus.keys()].sort((a, b) => a - b)) out[String(status)] = errorResponse(status, byStatus.get(status)!, html);
  return out;
}

/** A row of the table as an OpenAPI operation. */
function operation(row: OwnEndpoint): Obj {
  const { doc, body } = row;
  const requestBody = body
    ? { required: !body.optional, ...(body.description ? { description: body.description } : {}), content: json(ref(body.name)) }
    : doc.requestBody;
  return {
    operationId: doc.id,
    tags: [doc.tag],
    summary: doc.summary,
    ...(doc.description ? { description: doc.description } : {}),
    security: doc.security ?? [],
    ...(doc.parameters?.length ? { parameters: doc.parameters } : {}),
    ...(requestBody ? { requestBody } : {}),
    responses: { ...doc.responses, ...errorResponses(doc.errors, row.html) },
  };
}

/** The table's path as an OpenAPI path template ("/scan/tickets/:id" → "/scan/tickets/{id}"). */
const template = (path: string) => path.replace(/:([A-Za-z_]\w*)/g, '{$1}');

/** components.schemas: the answers' and the bodies' zod schemas as JSON Schema, referring to each other by name. */
function componentSchemas(c: DocContext, rows: OwnEndpoint[]): Obj {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(answerSchemas(c))) registry.add(schema, { id });
  for (const row of rows) if (row.body && !registry.has(row.body.schema)) registry.add(row.body.schema, { id: row.body.name });
  const { schemas } = z.toJSONSchema(registry, { io: 'input', target: 'draft-2020-12', uri: (id) => ref(id).$ref, override: unbounded }) as { schemas: Record<string, Obj> };
  for (const s of Object.values(schemas)) {
    delete s.$schema;
    delete s.$id;
  }
  return schemas;
}

function securitySchemes(c: DocContext): Obj {
  const { web, cookies } = c;
  const out: Obj = { bearer: { type: 'http', scheme: 'bearer', description: `The token from POST ${c.config.endpoints.login}.` } };
  if (web && cookies) {
    out.sessionCookie = {
      type: 'apiKey',
      in: 'cookie',
      name: cookies.session,
      description:
        `The session cookie of web logins (HttpOnly${cookies.secure ? ', Secure' : ''}, SameSite=Lax). A request that changes something with it must come from an allowed page: ` +
        (web.cookie.csrf === 'double-submit' ? `X-CSRF-Token with the value of the \`${cookies.csrf}\` cookie.` : 'its Origin (or Referer) is web.publicUrl\'s or one of web.origins.') +
        ' A request with an Authorization header is judged by that header alone.',
    };
  }
  return out;
}

export function openapiDocument(config: Config): object {
  const c = docContext(config);
  const web = config.web;
  const { endpoints } = ownEndpoints(config);
  const paths: Record<string, Obj> = {};
  for (const row of endpoints) {
    const path = template(row.path);
    paths[path] = { ...paths[path], [row.method.toLowerCase()]: operation(row) };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'wxgate',
      version: packageVersion(),
      description:
        'The endpoints wxgate answers itself: logins and sessions for WeChat mini-programs' +
        (web ? ' and web logins' : '') +
        ', health and metrics. Paths match case-insensitively, with or without one trailing slash; GET endpoints answer HEAD too, and any other method answers 405 `method_not_allowed` with an Allow header. Everything else is proxied to the configured routes.',
    },
    ...(web ? { servers: [{ url: web.publicUrl }] } : {}),
    tags: [
      { name: 'session', description: 'Mini-program login and sessions.' },
      { name: 'mini-program', description: 'WeChat open data and phone numbers for a session.' },
      { name: 'operations', description: 'Health, readiness and metrics.' },
      ...(web ? [{ name: 'web', description: 'Browser logins with WeChat OAuth.' }] : []),
      ...(web?.scan ? [{ name: 'scan', description: 'Scan to log in on a PC with the mini-program.' }] : []),
      ...(web?.mpQr ? [{ name: 'mpqr', description: 'Follow the Official Account\'s QR code to log in on a PC, and its server URL for WeChat.' }] : []),
    ],
    paths,
    components: { schemas: componentSchemas(c, endpoints), securitySchemes: securitySchemes(c) },
  };
}
