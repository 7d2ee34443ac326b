import { z } from 'zod';
import { parseCiphertext } from '../wechat/userdata.js';

/**
 * The JSON bodies of the gateway's own endpoints, in zod: one schema validates a body (its first issue's
 * message is the 400 invalid_request answer) and, through z.toJSONSchema, is the OpenAPI requestBody.
 */

/** A wx.login() or getPhoneNumber code: a short printable token; anything else never goes to WeChat. */
export const CODE = /^[\x21-\x7e]{1,128}$/;
const SHA1 = /^[0-9a-fA-F]{40}$/;

const OPEN_DATA_REQUIRED = '"encryptedData" and "iv" (base64 strings from WeChat) are required.';
const SIGNATURE = '"signature" must be a SHA-1 in hex (40 characters).';
const base64 = (description: string) => z.string({ error: OPEN_DATA_REQUIRED }).min(1, { error: OPEN_DATA_REQUIRED }).meta({ description });

/** WeChat open data as the mini-program got it (each optional here; see openDataChecked). */
const openDataShape = {
  encryptedData: base64('Base64.').optional(),
  iv: base64('Base64, 16 bytes.').optional(),
  rawData: z.string({ error: '"rawData" must be a string.' }).meta({ description: 'With `signature`.' }).optional(),
  signature: z.string({ error: SIGNATURE }).regex(SHA1, { error: SIGNATURE }).meta({ description: 'SHA-1 of rawData and the session_key, hex; with `rawData`.' }).optional(),
};

export interface UserDataFields {
  encryptedData: string;
  iv: string;
  rawData?: string;
  signature?: string;
}
type OpenData = { encryptedData?: string; iv?: string; rawData?: string; signature?: string };

/**
 * What the field schemas cannot say: with `required` false the fields may all be absent; else
 * encryptedData and iv must be there and decode to AES blocks and a 16-byte iv, and rawData and
 * signature go together.
 */
function openDataProblem(v: OpenData, required: boolean): string | undefined {
  const { encryptedData, iv, rawData, signature } = v;
  if (!required && encryptedData === undefined && iv === undefined && rawData === undefined && signature === undefined) return undefined;
  if (encryptedData === undefined || iv === undefined) return OPEN_DATA_REQUIRED;
  const parsed = parseCiphertext(encryptedData, iv);
  if (!parsed.ok) return parsed.message;
  if ((rawData === undefined) !== (signature === undefined)) return '"rawData" and "signature" go together: give both or neither.';
  return undefined;
}

function openDataChecked<T extends z.ZodType<OpenData>>(schema: T, required: boolean): T {
  return schema.check((ctx) => {
    const message = openDataProblem(ctx.value as OpenData, required);
    if (message) ctx.issues.push({ code: 'custom', message, input: ctx.value });
  }) as T;
}

/** The open-data fields of a validated body, or undefined when there are none. */
export function userDataOf(body: OpenData): UserDataFields | undefined {
  const { encryptedData, iv, rawData, signature } = body;
  if (encryptedData === undefined || iv === undefined) return undefined;
  return { encryptedData, iv, ...(rawData !== undefined ? { rawData, signature: signature! } : {}) };
}

export const openDataFields = () => z.object(openDataShape).meta({ description: 'WeChat open data as the mini-program got it.' });

/** POST /login. `appid` is checked by the handler (with X-Wx-Appid; 400 unknown_appid), so any value passes here. */
export function loginBody(appids: string[]) {
  const REQUIRED = 'A "code" string from wx.login() is required.';
  return openDataChecked(
    z.object({
      code: z
        .string({ error: REQUIRED })
        .min(1, { error: REQUIRED })
        .regex(CODE, { error: 'The "code" is not a wx.login() code (1-128 printable characters).' })
        .meta({ description: 'From wx.login().' }),
      appid: z.unknown().meta({ type: 'string', enum: appids, description: 'The mini-program; optional when one app is served.' }).optional(),
      ...openDataShape,
    }),
    false,
  );
}

export const decryptBody = () =>
  openDataChecked(z.object({ ...openDataShape, encryptedData: openDataShape.encryptedData.unwrap(), iv: openDataShape.iv.unwrap() }), true);

export const logoutBody = () =>
  z.object({ all: z.boolean({ error: '"all" must be true or false.' }).meta({ description: 'End every session of the user (all devices).' }).optional() });

export function phoneBody() {
  const CODE_REQUIRED = 'A "code" string from the getPhoneNumber button (1-128 printable characters) is required.';
  return z.object({
    code: z.string({ error: CODE_REQUIRED }).regex(CODE, { error: CODE_REQUIRED }).meta({ description: 'From the getPhoneNumber button.' }),
    force: z
      .boolean({ error: '"force" must be true or false.' })
      .meta({ description: 'Ask WeChat even when the gateway keeps a number the user granted within limits.phone.window.' })
      .optional(),
  });
}

export type LoginBody = z.output<ReturnType<typeof loginBody>>;
export type LogoutBody = z.output<ReturnType<typeof logoutBody>>;
export type DecryptBody = z.output<ReturnType<typeof decryptBody>>;
export type PhoneBody = z.output<ReturnType<typeof phoneBody>>;
