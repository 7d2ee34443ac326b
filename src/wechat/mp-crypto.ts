import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * The Official Account's message push (服务器配置) as WeChat secures it:
 *   signature      = sha1(sort(token, timestamp, nonce).join(''))           every request, plaintext or not
 *   msg_signature  = sha1(sort(token, timestamp, nonce, Encrypt).join(''))  safe mode (encrypt_type=aes)
 *   Encrypt        = base64(AES-256-CBC(key, iv = key[0..16], PKCS#7 to 32 bytes,
 *                      random(16) + msg_len(4 bytes, big endian) + msg + appid))
 *   key            = base64decode(EncodingAESKey + "=")  (43 characters → 32 bytes)
 * as in WeChat's own sample code (WXBizMsgCrypt). The same code encrypts the gateway's passive replies,
 * and the simulator's pushes.
 */

/** sha1 of the sorted parts, joined, in hex: `signature` (token, timestamp, nonce) or `msg_signature` (… and Encrypt). */
export function mpSignature(...parts: string[]): string {
  return createHash('sha1').update([...parts].sort().join('')).digest('hex');
}

/** Compares a signature WeChat sent with the expected one in constant time (40 hex digits). */
export function signatureMatches(given: unknown, expected: string): boolean {
  if (typeof given !== 'string' || given.length !== expected.length) return false;
  return timingSafeEqual(Buffer.from(given.toLowerCase()), Buffer.from(expected));
}

const BLOCK = 32;

export class MpCrypto {
  private readonly key: Buffer;
  private readonly iv: Buffer;

  /** `encodingAESKey`: the 43 characters of the OA console; `appid`: the Official Account's. */
  constructor(
    encodingAESKey: string,
    private readonly appid: string,
  ) {
    if (!/^[A-Za-z0-9]{43}$/.test(encodingAESKey)) throw new Error('the EncodingAESKey must be 43 letters or digits');
    this.key = Buffer.from(`${encodingAESKey}=`, 'base64');
    if (this.key.length !== 32) throw new Error('the EncodingAESKey does not decode to 32 bytes');
    this.iv = this.key.subarray(0, 16);
  }

  /** The message inside an `Encrypt`; throws MpCryptoError when it does not decrypt, or was made for another appid. */
  decrypt(encrypted: string): string {
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encrypted)) throw new MpCryptoError('not base64');
    const data = Buffer.from(encrypted, 'base64');
    if (data.length === 0 || data.length % BLOCK !== 0) throw new MpCryptoError('not a whole number of blocks');
    let plain: Buffer;
    try {
      const d = createDecipheriv('aes-256-cbc', this.key, this.iv);
      d.setAutoPadding(false);
      plain = Buffer.concat([d.update(data), d.final()]);
    } catch {
      throw new MpCryptoError('does not decrypt');
    }
    const pad = plain[plain.length - 1]!;
    if (pad < 1 || pad > BLOCK || pad > plain.length) throw new MpCryptoError('bad padding');
    for (let i = plain.length - pad; i < plain.length; i++) if (plain[i] !== pad) throw new MpCryptoError('bad padding');
    const body = plain.subarray(0, plain.length - pad);
    if (body.length < 20) throw new MpCryptoError('too short');
    const len = body.readUInt32BE(16);
    if (20 + len > body.length) throw new MpCryptoError('bad length');
    const appid = body.subarray(20 + len).toString('utf8');
    if (appid !== this.appid) throw new MpCryptoError('made for another appid');
    return body.subarray(20, 20 + len).toString('utf8');
  }

  /** `msg` encrypted for WeChat (random prefix; `prefix` only for known-answer tests). */
  encrypt(msg: string, prefix: Buffer = randomBytes(16)): string {
    const text = Buffer.from(msg, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(text.length);
    const body = Buffer.concat([prefix, len, text, Buffer.from(this.appid, 'utf8')]);
    const pad = BLOCK - (body.length % BLOCK);
    const c = createCipheriv('aes-256-cbc', this.key, this.iv);
    c.setAutoPadding(false);
    return Buffer.concat([c.update(Buffer.concat([body, Buffer.alloc(pad, pad)])), c.final()]).toString('base64');
  }
}

export class MpCryptoError extends Error {
  constructor(reason: string) {
    super(`encrypted message: ${reason}`);
    this.name = 'MpCryptoError';
  }
}

/**
 * WeChat's flat message XML: `<xml><Tag><![CDATA[text]]></Tag><Tag>text</Tag>…</xml>`, one level, as the
 * message push sends it (events, messages, the safe mode envelope). Strict and small: anything else (a
 * DOCTYPE, processing instructions, nested elements, attributes, a tag given twice, unknown entities)
 * is refused with undefined. Text outside CDATA may use the five XML entities and numeric references.
 */
export function parseFlatXml(text: string): Record<string, string> | undefined {
  let s = text.replace(/^\uFEFF/, '').trim();
  if (s.startsWith('<?xml')) {
    const end = s.indexOf('?>');
    if (end < 0) return undefined;
    s = s.slice(end + 2).trim();
  }
  if (!s.startsWith('<xml>') || !s.endsWith('</xml>')) return undefined;
  let rest = s.slice(5, -6);
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  const OPEN = /^\s*<([A-Za-z_][A-Za-z0-9_]{0,63})>/;
  for (;;) {
    rest = rest.replace(/^\s+/, '');
    if (rest === '') return out;
    const m = OPEN.exec(rest);
    if (!m) return undefined;
    const tag = m[1]!;
    rest = rest.slice(m[0].length);
    const close = `</${tag}>`;
    let value: string;
    if (rest.startsWith('<![CDATA[')) {
      value = '';
      // one section, or several in a row (how a "]]>" inside the text is written)
      while (rest.startsWith('<![CDATA[')) {
        const end = rest.indexOf(']]>');
        if (end < 0) return undefined;
        value += rest.slice(9, end);
        rest = rest.slice(end + 3);
      }
      rest = rest.replace(/^\s+/, '');
      if (!rest.startsWith(close)) return undefined;
    } else {
      const end = rest.indexOf('<');
      if (end < 0 || !rest.startsWith(close, end)) return undefined;
      const decoded = decodeEntities(rest.slice(0, end));
      if (decoded === undefined) return undefined;
      value = decoded.trim();
      rest = rest.slice(end);
    }
    rest = rest.slice(close.length);
    if (Object.hasOwn(out, tag)) return undefined;
    out[tag] = value;
  }
}

const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

function decodeEntities(text: string): string | undefined {
  let bad = false;
  const out = text.replace(/&([^;\s]{1,10});|&/g, (all, name: string | undefined) => {
    if (name === undefined) return ((bad = true), all);
    if (Object.hasOwn(ENTITIES, name)) return ENTITIES[name]!;
    const num = /^#(?:x([0-9a-fA-F]{1,6})|([0-9]{1,7}))$/.exec(name);
    const cp = num ? Number.parseInt(num[1] ?? num[2]!, num[1] ? 16 : 10) : NaN;
    if (!Number.isInteger(cp) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return ((bad = true), all);
    return String.fromCodePoint(cp);
  });
  return bad ? undefined : out;
}

/** A flat XML message: string values as CDATA (a "]]>" inside is split over two sections), numbers as text. */
export function flatXml(fields: ReadonlyArray<readonly [string, string | number]>): string {
  const cdata = (v: string) => `<![CDATA[${v.split(']]>').join(']]]]><![CDATA[>')}]]>`;
  return `<xml>${fields.map(([k, v]) => `<${k}>${typeof v === 'number' ? String(v) : cdata(v)}</${k}>`).join('')}</xml>`;
}
