/**
 * The page a browser gets when WeChat opened the login as a Moments snapshot page (朋友圈快照页): WeChat
 * answers `is_snapshotuser: 1` with a stand-in openid, so there is no login to give. The user has to open
 * the full page (WeChat's "使用完整服务" bar at the bottom of a snapshot page) and log in there. Chinese
 * first, English below; no script (the error pages' CSP allows inline styles only).
 */
export function snapshotPage(retryUrl: string): string {
  const href = retryUrl.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>请打开完整页面 · Open the full page</title></head>
<body style="font:16px system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;line-height:1.5">
<h1 style="font-size:1.3rem">请打开完整页面后登录</h1>
<p id="snapshot-zh">你正在朋友圈的快照页中浏览，这里无法登录。请点击屏幕底部的「使用完整服务」，在完整页面中重新登录。</p>
<p><a id="retry" href="${href}" style="display:inline-block;padding:.6rem 1.2rem;background:#07c160;color:#fff;border-radius:.3rem;text-decoration:none">重新登录 · Log in again</a></p>
<hr style="border:0;border-top:1px solid #ddd;margin:1.5rem 0">
<h2 style="font-size:1.1rem">Open the full page to log in</h2>
<p id="snapshot-en" lang="en">This is a Moments snapshot of the page, where you cannot log in. Tap “使用完整服务” (use the full service) at the bottom of the screen and log in on the full page.</p>
<p><code>login_denied</code></p>
</body></html>`;
}
