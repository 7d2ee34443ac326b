import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { hashToken, hashTokenPlain, newToken, TOKEN_HASH_LENGTH, userId } from '../src/session/tokens.js';

/** The key as the store has always made it: the id's 12 bytes, then the first 16 of SHA-256(token), base64url. */
function reference(token: string): string {
  const id = Buffer.from(token.slice(0, 16), 'base64url');
  return Buffer.concat([id, createHash('sha256').update(token).digest().subarray(0, 16)]).toString('base64url');
}

test('a token keeps the key sessions stored before the fast hash were written under', (t) => {
  // a fixed token's key, as the store wrote it in earlier releases: sessions survive an upgrade
  t.is(hashToken('ABCDEFGHIJKLMNOPabcdefghijklmnopqrstuvwxyz0123456789-_ABCDE'), 'ABCDEFGHIJKLMNOPYGOA-07uQ2QqPQ_3twp9iA');
  for (let i = 0; i < 2000; i++) {
    const token = newToken({ appid: 'wx1', openid: `o${i}` });
    const key = hashToken(token);
    t.is(key, reference(token));
    t.is(key, hashTokenPlain(token));
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
  // another length than a token's: the plain way, and a short string does not pick up bytes of the last key
  t.is(hashToken('short'), hashTokenPlain('short'));
  t.is(hashToken(''), hashTokenPlain(''));
  t.not(hashToken(a.slice(0, 58)), ka);
});
