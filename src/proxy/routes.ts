import type { RouteConfig } from '../config/schema.js';

export interface Route extends RouteConfig {
  /** lower-cased path prefix */
  readonly prefix: string;
}

/**
 * Path-prefix routing on segment boundaries; the longest prefix wins. Matching is case-insensitive,
 * so `/API/secret` is held to the rules of `/api` instead of slipping through a shorter public prefix.
 */
export class RouteTable {
  private readonly routes: Route[];

  constructor(routes: ReadonlyArray<RouteConfig>) {
    this.routes = routes
      .map((r) => ({ ...r, prefix: r.path.toLowerCase() }))
      .sort((a, b) => b.prefix.length - a.prefix.length);
  }

  /** `matchKey` is the decoded, lower-cased path from checkPath. */
  match(matchKey: string): Route | undefined {
    for (const r of this.routes) {
      if (r.prefix === '/') return r;
      if (matchKey.startsWith(r.prefix) && (matchKey.length === r.prefix.length || matchKey.charCodeAt(r.prefix.length) === 47)) {
        return r;
      }
    }
    return undefined;
  }

  get all(): ReadonlyArray<Route> {
    return this.routes;
  }
}
