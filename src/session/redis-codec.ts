import { keptE164, type Flow, type KeptPhone, type SessionRecord } from './types.js';

/*
 * How the Redis session store keeps sessions: the key layout, and a session's encoding in its field.
 *
 * Key layout (Redis ≥ 7.0): one hash per user, found from the token.
 *   {prefix}u:{uid}      hash, uid = base64url of the first 96 bits of SHA-256("appid\nopenid") (16 chars):
 *                          "w"     → "appid\topenid" (who the hash belongs to; checked at every login, so two
 *                                    users whose ids collide are never merged: the login fails instead)
 *                          "n"     → the unionid from the user's latest login (absent when WeChat gave none)
 *                          "k"     → the user's current session_key (from their latest login)
 *                          "p"     → the phone number the user granted (POST /wx/phone), the user's, not a
 *                                    session's: "phoneNumber\tpurePhoneNumber\tcountryCode\tgrantedAt36";
 *                                    absent until granted (one field per user who did: no cost per session)
 *                          {field} → one per session: "[phone\t]createdAt\texpiresAt\tidleExpiresAt[\tF]" (times
 *                                    in base 36 ms; the phone number, E.164, only in fields an earlier
 *                                    version wrote when the user granted it in that session: still read,
 *                                    "p" wins, and dropped when the number is revoked;
 *                                    F: the flow that made the session, one capital letter (FLOW_CODES),
 *                                    absent for the mini-program's own logins and for records from before
 *                                    flows existed, which read as miniprogram)
 *                        PEXPIREAT = the latest idle deadline of the user's sessions (never past a session's
 *                        expiresAt): set at each login, moved forward (GT) by activity, tightened when a
 *                        session is revoked; the key is deleted with the user's last session. A session's
 *                        own deadlines are checked from its field (dead fields are dropped at the next login).
 *   {prefix}a:{account} hash, for a unionid's account only (accounts.ts: "u" + 96 bits of a hash of the unionid):
 *                          {uid} → "" (one per identity that logged in with the unionid: its user key's id)
 *                        PEXPIREAT = the latest absolute deadline of the sessions made for it (never earlier:
 *                        written at each login of a unionid, after the user's script: another key, so another
 *                        command, on a Cluster too). What the admin API lists a person's identities from (each
 *                        through its user key, while that lives); the request path never reads it. As small
 *                        as a key gets (measured at 100,000 sessions, half the users with a unionid: +103 B per
 *                        session with "appid\topenid" fields and the unionid, which broke the 400 B target;
 *                        uids only: see BENCHMARKS.md). An identity's own account ("i" + uid) has no key: its
 *                        user key is found from the id.
 *   {prefix}invalidate   pub/sub channel: revoked token hashes, comma-separated
 * A token is base64url(uid's 12 bytes ‖ 32 random bytes) (59 chars); its hash, what callers hold, is the
 * uid (16 chars) followed by {field} = base64url of the first 128 bits of SHA-256(token) (22 chars). The
 * token itself is never stored, nor anything of its random part but that hash (see tokens.ts).
 *
 * Every element stays well under hash-max-listpack-value (64 bytes; openids and unionids are 28
 * characters), so Redis keeps each user's hash as a compact listpack up to hash-max-listpack-entries (128)
 * fields, i.e. up to about 125 sessions per user; beyond that it still works, as a plain hash table.
 * One key per user instead of two keys per session: Redis's ~90 bytes of per-key bookkeeping (key,
 * dict entry, expiry entry) are paid once per user. Measured with the default prefix on Redis 7.0 (npm run
 * bench:memory, 1,000,000 sessions, half the users with a unionid): about 305 bytes of used_memory per
 * session when every user has one session (482 with the earlier two keys per session), about 140 with
 * three sessions per user.
 *
 * Every operation touches one key, so each is one command or one Lua script, atomic alike on a single
 * node, behind Sentinel and on a Cluster (the limit of sessions per user holds under concurrent logins
 * everywhere).
 *
 * Sessions written by the earlier layout ({prefix}s:{tokenHash} strings and {prefix}u:{appid}:{openid}
 * indexes, 43-character tokens) are not read: after the upgrade their tokens are refused (401) and users
 * log in again; the old keys expire by themselves.
 */
export const SEP = '\t';

/** A session's flow in its field value: one capital letter (never a base-36 digit); none = miniprogram. */
const FLOW_CODES: Readonly<Record<Exclude<Flow, 'miniprogram'>, string>> = { mp: 'P', open: 'W', scan: 'S', mpqr: 'Q' };
const FLOW_OF: ReadonlyMap<string, Flow> = new Map(Object.entries(FLOW_CODES).map(([f, c]) => [c, f as Flow]));

/** A session's field value: "[phone\t]createdAt36\texpiresAt36\tidleExpiresAt36[\tF]". */
export function encodeTimes(r: SessionRecord): string {
  if (r.phone?.includes(SEP)) throw new TypeError('phone must not contain a tab');
  const t = (ms: number) => Math.floor(ms).toString(36);
  const flow = r.flow === 'miniprogram' || r.flow === undefined ? '' : SEP + FLOW_CODES[r.flow];
  if (flow === `${SEP}undefined`) throw new TypeError(`unknown session flow ${JSON.stringify(r.flow)}`);
  return `${r.phone ? r.phone + SEP : ''}${t(r.createdAt)}${SEP}${t(r.expiresAt)}${SEP}${t(r.idleExpiresAt)}${flow}`;
}

/**
 * The record from a session's field value and the user's "w" and "n", or undefined when malformed (or of
 * a flow this version does not know: such a session is refused, never taken for a mini-program one).
 */
export function decode(v: string, who: string, unionid: string | null): SessionRecord | undefined {
  let flow: Flow = 'miniprogram';
  if (v.length > 2 && v.charCodeAt(v.length - 2) === 9 && /[A-Z]/.test(v[v.length - 1]!)) {
    const known = FLOW_OF.get(v[v.length - 1]!);
    if (!known) return undefined;
    flow = known;
    v = v.slice(0, -2);
  }
  const f = v.split(SEP);
  if (f.length !== 3 && f.length !== 4) return undefined;
  const phone = f.length === 4 ? f.shift() : undefined;
  const w = who.split(SEP);
  if (w.length !== 2) return undefined;
  const [appid, openid] = w as [string, string];
  const [created, expires, idle] = f as [string, string, string];
  const r: SessionRecord = {
    appid,
    openid,
    ...(unionid ? { unionid } : {}),
    flow,
    ...(phone ? { phone } : {}),
    createdAt: parseInt(created, 36),
    expiresAt: parseInt(expires, 36),
    idleExpiresAt: parseInt(idle, 36),
  };
  return Number.isFinite(r.createdAt) && Number.isFinite(r.expiresAt) && Number.isFinite(r.idleExpiresAt) ? r : undefined;
}

/** "p": "phoneNumber\tpurePhoneNumber\tcountryCode\tgrantedAt36". */
export function encodePhone(p: KeptPhone): string {
  const parts = [p.phoneNumber, p.purePhoneNumber, p.countryCode];
  if (parts.some((x) => x === '' || x.includes(SEP))) throw new TypeError('a phone number must be non-empty and without a tab');
  return [...parts, Math.floor(p.grantedAt).toString(36)].join(SEP);
}
export function decodePhone(v: string): KeptPhone | undefined {
  const f = v.split(SEP);
  if (f.length !== 4) return undefined;
  const grantedAt = parseInt(f[3]!, 36);
  return Number.isFinite(grantedAt) ? { phoneNumber: f[0]!, purePhoneNumber: f[1]!, countryCode: f[2]!, grantedAt } : undefined;
}
/** The record with the user's kept number ("p") as its phone, when there is one (it wins over a session's own). */
export function withKeptPhone(r: SessionRecord | undefined, p: string | null | undefined): SessionRecord | undefined {
  const kept = r && p ? decodePhone(p) : undefined;
  return kept ? { ...r!, phone: keptE164(kept) } : r;
}

export const alive = (r: SessionRecord, now: number) => now < r.idleExpiresAt && now < r.expiresAt;
