/** What `sns/jscode2session` gives for a valid code. */
export interface CodeSession {
  openid: string;
  sessionKey: string;
  unionid?: string;
}

export type WechatFailure = 'errcode' | 'timeout' | 'network' | 'bad_response';

/** A WeChat API call that did not give data: an errcode, a timeout, a network failure or an unreadable answer. */
export class WechatError extends Error {
  constructor(
    readonly kind: WechatFailure,
    readonly api: string,
    readonly errcode?: number,
    /** WeChat's errmsg, safe to log (it never contains the secret or the code). */
    readonly errmsg?: string,
  ) {
    super(
      kind === 'errcode'
        ? `WeChat ${api} answered errcode ${errcode}${errmsg ? ` (${errmsg})` : ''}`
        : `WeChat ${api} failed: ${kind}${errmsg ? ` (${errmsg})` : ''}`,
    );
    this.name = 'WechatError';
  }
}
