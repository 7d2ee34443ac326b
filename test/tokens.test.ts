import test from 'ava';
import { createHash, hash, randomBytes } from 'node:crypto';
import { hashOnce, hashToken, newToken, TOKEN_HASH_LENGTH, userId } from '../src/session/tokens.js';

/** The key as the store has always made it: the id's 12 bytes, then the first 16 of SHA-256(token), base64url. */
function reference(token: string): string {
  const id = Buffer.from(token.slice(0, 16), 'base64url');
  return Buffer.concat([id, createHash('sha256').update(token).digest().subarray(0, 16)]).toString('base64url');
}

/** hashToken as it was before the scratch buffer (967e279), line for line: the same key for any string. */
function before(token: string): string {
  const d = hash('sha256', token, 'buffer');
  d.copy(d, 12, 0, 16);
  d.write(token.slice(0, 16), 0, 12, 'base64url');
  return d.toString('base64url', 0, 28);
}

test('a token keeps the key sessions stored before the fast hash were written under', (t) => {
  // a fixed token's key, as the store wrote it in earlier releases: sessions survive an upgrade
  t.is(hashToken('ABCDEFGHIJKLMNOPabcdefghijklmnopqrstuvwxyz0123456789-_ABCDE'), 'ABCDEFGHIJKLMNOPYGOA-07uQ2QqPQ_3twp9iA');
  for (let i = 0; i < 2000; i++) {
    const token = newToken({ appid: 'wx1', openid: `o${i}` });
    const key = hashToken(token);
    t.is(key, reference(token));
    t.is(key, before(token));
    t.is(key.length, TOKEN_HASH_LENGTH);
    t.true(key.startsWith(userId('wx1', `o${i}`)));
  }
});

test('one call leaves nothing for the next: keys of different tokens, alternating, each its own', (t) => {
  const a = randomBytes(44).toString('base64url');
  const b = randomBytes(44).toString('base64url');
  const [ka, kb] = [reference(a), reference(b)];
  for (let i = 0; i < 10; i++) {
    t.is(hashToken(a), ka);
    t.is(hashToken(b), kb);
  }
  // strings that are no token (too short, characters outside base64url) get the key they got before,
  // never bytes of the call before
  for (const odd of ['short', '', '!'.repeat(59), 'AB==CD', 'ÿé中文abcdefghijklmnopqrstuvwxyz', a.slice(0, 58)]) {
    hashToken(a);
    t.is(hashToken(odd), before(odd), JSON.stringify(odd));
  }
});

test('hashOnce, remembered on a connection: every token gets its own key, whatever came before on it', (t) => {
  const conn = {};
  const a = newToken({ appid: 'wx1', openid: 'o-a' });
  const b = newToken({ appid: 'wx1', openid: 'o-b' });
  const c = `${a.slice(0, -1)}${a.endsWith('A') ? 'B' : 'A'}`; // one character off a
  for (const tok of [a, a, b, a, c, c, a, b, b]) t.is(hashOnce(conn, tok), reference(tok));
  // a token equal to the last one but another string object (the next request's header) is found
  t.is(hashOnce(conn, (' ' + b).slice(1)), reference(b));
  // two connections remember apart
  const other = {};
  t.is(hashOnce(other, a), reference(a));
  t.is(hashOnce(conn, b), reference(b));
});
