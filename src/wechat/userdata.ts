import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * WeChat's "open data" (encryptedData / iv from wx.getWeRunData, getPhoneNumber, wx.getUserProfile (a placeholder profile since 2022), ...):
 * AES-128-CBC with the user's session_key as key, PKCS#7 padding, everything base64. The plaintext is a
 * JSON object with `watermark: { appid, timestamp }`. Alongside comes `rawData` (JSON text) and
 * `signature = sha1(rawData + session_key)` in hex.
 *
 * Pure functions, no I/O; they never log. Used by /wx/decrypt, /login and the dev simulator.
 */

export type UserDataFailure =
  /** the input itself is malformed: not base64, wrong lengths (the caller's fault, before any crypto) */
  | { ok: false; reason: 'invalid'; message: string }
  /** the data does not decrypt: bad padding, not UTF-8, not a JSON object (wrong key or tampered) */
  | { ok: false; reason: 'decrypt'; message: string }
  /** decrypted, but its watermark names another app or lacks a timestamp */
  | { ok: false; reason: 'watermark'; message: string };

export type UserDataResult = { ok: true; data: Record<string, unknown>; watermark: { appid: string; timestamp: number } } | UserDataFailure;

/** Standard base64 (WeChat's alphabet), with its padding; no whitespace. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** The bytes of a standard base64 string, or undefined when it is not one. */
export function strictBase64(text: string): Buffer | undefined {
  if (text.length === 0 || !BASE64.test(text)) return undefined;
  return Buffer.from(text, 'base64');
}

/**
 * Checks the shapes of encryptedData and iv without decrypting: both base64, the iv 16 bytes, the data
 * a non-zero multiple of 16 bytes. Returns the bytes, or what is wrong (never echoing the input).
 */
export function parseCiphertext(encryptedData: string, iv: string): { ok: true; data: Buffer; iv: Buffer } | { ok: false; message: string } {
  const ivBytes = strictBase64(iv);
  if (!ivBytes) return { ok: false, message: '"iv" must be base64.' };
  if (ivBytes.length !== 16) return { ok: false, message: '"iv" must be 16 bytes (24 base64 characters).' };
  const data = strictBase64(encryptedData);
  if (!data) return { ok: false, message: '"encryptedData" must be base64.' };
  if (data.length === 0 || data.length % 16 !== 0) return { ok: false, message: '"encryptedData" must be a whole number of 16-byte AES blocks.' };
  return { ok: true, data, iv: ivBytes };
}

/** The 16-byte AES key of a base64 session_key, or undefined when it is not one. */
export function sessionKeyBytes(sessionKey: string): Buffer | undefined {
  const key = strictBase64(sessionKey);
  return key && key.length === 16 ? key : undefined;
}

/**
 * Strips PKCS#7 padding by hand, checking every pad byte (1..16, all equal), so a wrong key or a tampered
 * block is a plain `undefined` instead of an exception from the cipher.
 */
export function unpad(block: Buffer): Buffer | undefined {
  if (block.length === 0 || block.length % 16 !== 0) return undefined;
  const n = block[block.length - 1]!;
  if (n < 1 || n > 16) return undefined;
  let bad = 0;
  for (let i = block.length - n; i < block.length; i++) bad |= block[i]! ^ n;
  return bad === 0 ? block.subarray(0, block.length - n) : undefined;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * One message for every way the plaintext can be wrong (padding, UTF-8, JSON), so that the answer is no
 * padding oracle.
 */
const UNDECRYPTABLE = 'The data does not decrypt with the session key of this login.';

/**
 * Decrypts WeChat open data with `sessionKey` (base64) and checks its watermark against `appid`.
 * `data` is the decrypted object without its watermark; `watermark` is returned separately.
 */
export function decryptUserData(sessionKey: string, encryptedData: string, iv: string, appid: string): UserDataResult {
  const parsed = parseCiphertext(encryptedData, iv);
  if (!parsed.ok) return { ok: false, reason: 'invalid', message: parsed.message };
  const key = sessionKeyBytes(sessionKey);
  if (!key) return { ok: false, reason: 'decrypt', message: UNDECRYPTABLE };

  const decipher = createDecipheriv('aes-128-cbc', key, parsed.iv);
  decipher.setAutoPadding(false);
  const plain = unpad(Buffer.concat([decipher.update(parsed.data), decipher.final()]));
  if (!plain) return { ok: false, reason: 'decrypt', message: UNDECRYPTABLE };

  let value: unknown;
  try {
    value = JSON.parse(utf8.decode(plain));
  } catch {
    return { ok: false, reason: 'decrypt', message: UNDECRYPTABLE };
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) return { ok: false, reason: 'decrypt', message: UNDECRYPTABLE };
  const { watermark, ...data } = value as Record<string, unknown>;
  const wm = watermark as { appid?: unknown; timestamp?: unknown } | undefined;
  if (!wm || typeof wm !== 'object' || typeof wm.appid !== 'string') {
    return { ok: false, reason: 'watermark', message: 'The decrypted data has no watermark.' };
  }
  if (wm.appid !== appid) return { ok: false, reason: 'watermark', message: 'The data was made for another app (watermark.appid).' };
  if (typeof wm.timestamp !== 'number' || !Number.isFinite(wm.timestamp)) {
    return { ok: false, reason: 'watermark', message: 'The watermark has no timestamp.' };
  }
  return { ok: true, data, watermark: { appid: wm.appid, timestamp: wm.timestamp } };
}

/** WeChat's signature of rawData: sha1(rawData + session_key), hex. */
export function signRawData(rawData: string, sessionKey: string): string {
  return createHash('sha1').update(rawData + sessionKey, 'utf8').digest('hex');
}

/** Compares `signature` with sha1(rawData + session_key) in constant time (both as 20-byte digests). */
export function verifySignature(rawData: string, signature: string, sessionKey: string): boolean {
  if (!/^[0-9a-fA-F]{40}$/.test(signature)) return false;
  const expected = createHash('sha1').update(rawData + sessionKey, 'utf8').digest();
  const given = Buffer.from(signature, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/**
 * Encrypts `data` the way WeChat does, with `watermark: { appid, timestamp }` added, for the simulator and
 * tests. `rawData` is the JSON of `data` without the watermark, `signature` its sha1 with the key.
 */
export function encryptUserData(
  sessionKey: string,
  appid: string,
  data: Record<string, unknown>,
  opts: { timestamp?: number; iv?: Buffer } = {},
): { encryptedData: string; iv: string; rawData: string; signature: string } {
  const key = sessionKeyBytes(sessionKey);
  if (!key) throw new TypeError('session_key must be 16 bytes in base64');
  const iv = opts.iv ?? randomBytes(16);
  const { watermark: _ignored, ...rest } = data;
  const plain = JSON.stringify({ ...rest, watermark: { timestamp: opts.timestamp ?? Math.floor(Date.now() / 1000), appid } });
  const cipher = createCipheriv('aes-128-cbc', key, iv);
  const encrypted = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
  const rawData = JSON.stringify(rest);
  return { encryptedData: encrypted.toString('base64'), iv: iv.toString('base64'), rawData, signature: signRawData(rawData, sessionKey) };
}
