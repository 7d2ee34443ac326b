import { createHash } from 'node:crypto';

/**
 * The simulator's user ids, apart from simulator.ts so that its API modules (simulator-token, -web,
 * -mpqr) can use them without importing the module that imports them.
 */

const sha256 = (text: string) => createHash('sha256').update(text).digest();

/** The openid the simulator gives `user` in `appid`: "o" and 27 base64url characters, like WeChat's. */
export function simulatedOpenid(appid: string, user: string): string {
  return `o${sha256(`${appid}:${user}`).toString('base64url').slice(0, 27)}`;
}

/** The unionid of a "union*" user: the same in every app. */
export function simulatedUnionid(user: string): string {
  return `o${sha256(`unionid:${user}`).toString('base64url').slice(0, 27)}`;
}
