import { parser } from '@prometheus-io/lezer-promql';

/**
 * PromQL as a small tree for the dashboard and alert checks, parsed by Prometheus's own grammar
 * (@prometheus-io/lezer-promql); the tree keeps only what the label checks need.
 */

export interface Matcher {
  label: string;
  op: string;
  value: string;
}
export type Node =
  | { k: 'num' }
  | { k: 'str'; v: string }
  | { k: 'sel'; name?: string; matchers: Matcher[] }
  | { k: 'range'; e: Node }
  | { k: 'neg'; e: Node }
  | { k: 'call'; fn: string; args: Node[] }
  | { k: 'agg'; op: string; mode?: 'by' | 'without'; labels: string[]; args: Node[] }
  | { k: 'bin'; op: string; lhs: Node; rhs: Node; on?: { mode: 'on' | 'ignoring'; labels: string[] }; group?: { side: string; labels: string[] } };

type SyntaxNode = ReturnType<typeof parser.parse>['topNode'];

/** Grafana's variables outside quotes ($__rate_interval in a range, $x as a number) as plain PromQL. */
function withoutVariables(src: string): string {
  let out = '';
  let quote = '';
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!;
    if (quote) {
      out += c;
      if (c === '\\' && quote !== '`') out += src[++i] ?? '';
      else if (c === quote) quote = '';
    } else if (c === '"' || c === "'" || c === '`') {
      quote = c;
      out += c;
    } else if (c === '$') {
      const m = /^\$(\{[^}]+\}|\w+)/.exec(src.slice(i))!;
      i += m[0].length - 1;
      out += /(\[|:|offset\s*)$/.test(out.trimEnd()) || /\[\s*$/.test(out) ? '5m' : '1';
    } else out += c;
  }
  return out;
}

const EXPRESSIONS = new Set(['ParenExpr', 'NumberDurationLiteral', 'StringLiteral', 'VectorSelector', 'MatrixSelector', 'SubqueryExpr', 'OffsetExpr', 'StepInvariantExpr', 'UnaryExpr', 'FunctionCall', 'AggregateExpr', 'BinaryExpr']);

const children = (n: SyntaxNode): SyntaxNode[] => {
  const out: SyntaxNode[] = [];
  for (let c = n.firstChild; c; c = c.nextSibling) out.push(c);
  return out;
};
const labelNames = (n: SyntaxNode | undefined, text: (n: SyntaxNode) => string) => (n ? children(n).filter((c) => c.name === 'LabelName').map(text) : []);
const unquote = (s: string) => (s[0] === '`' ? s.slice(1, -1) : (JSON.parse(s[0] === "'" ? `"${s.slice(1, -1).replace(/"/g, '\\"')}"` : s) as string));

/** Parses one expression; throws with the position of the first syntax error. */
export function parsePromQL(source: string): Node {
  const src = withoutVariables(source);
  const tree = parser.parse(src);
  tree.iterate({
    enter: (n) => {
      if (n.type.isError) throw new Error(`syntax error at ${n.from}: "${src.slice(Math.max(0, n.from - 10), n.from + 10)}"`);
    },
  });
  const text = (n: SyntaxNode) => src.slice(n.from, n.to);
  const exprs = (n: SyntaxNode) => children(n).filter((c) => EXPRESSIONS.has(c.name));
  const conv = (n: SyntaxNode): Node => {
    const kids = children(n);
    const find = (name: string) => kids.find((c) => c.name === name);
    switch (n.name) {
      case 'NumberDurationLiteral':
        return { k: 'num' };
      case 'StringLiteral':
        return { k: 'str', v: unquote(text(n)) };
      case 'VectorSelector': {
        const id = find('Identifier');
        const matchers = children(find('LabelMatchers') ?? n)
          .filter((c) => c.name === 'UnquotedLabelMatcher' || c.name === 'QuotedLabelMatcher')
          .map((m) => {
            const [label, op, value] = children(m);
            return { label: label!.name === 'StringLiteral' ? unquote(text(label!)) : text(label!), op: text(op!), value: unquote(text(value!)) };
          });
        return { k: 'sel', ...(id ? { name: text(id) } : {}), matchers };
      }
      case 'MatrixSelector':
      case 'SubqueryExpr':
        return { k: 'range', e: conv(exprs(n)[0]!) };
      case 'UnaryExpr':
        return { k: 'neg', e: conv(exprs(n)[0]!) };
      case 'FunctionCall':
        return { k: 'call', fn: text(find('FunctionIdentifier')!), args: exprs(find('FunctionCallBody')!).map(conv) };
      case 'AggregateExpr': {
        const mod = find('AggregateModifier');
        const mode = mod ? (text(mod.firstChild!).toLowerCase() as 'by' | 'without') : undefined;
        return { k: 'agg', op: text(find('AggregateOp')!).toLowerCase(), mode, labels: labelNames(mod?.getChild('GroupingLabels') ?? undefined, text), args: exprs(find('FunctionCallBody')!).map(conv) };
      }
      case 'BinaryExpr': {
        const [lhs, rhs] = exprs(n);
        const op = kids.find((c) => !EXPRESSIONS.has(c.name) && c.name !== 'BoolModifier' && c.name !== 'MatchingModifierClause')!;
        const clause = find('MatchingModifierClause');
        const parts = clause ? children(clause) : [];
        const groups = parts.filter((c) => c.name === 'GroupingLabels');
        const side = parts.find((c) => c.name === 'GroupLeft' || c.name === 'GroupRight');
        return {
          k: 'bin',
          op: text(op).toLowerCase(),
          lhs: conv(lhs!),
          rhs: conv(rhs!),
          ...(clause ? { on: { mode: text(parts[0]!).toLowerCase() as 'on' | 'ignoring', labels: labelNames(groups[0], text) } } : {}),
          ...(side ? { group: { side: text(side).toLowerCase(), labels: labelNames(groups[1], text) } } : {}),
        };
      }
      default: // PromQL, ParenExpr, OffsetExpr, StepInvariantExpr: the expression inside
        return conv(exprs(n)[0] ?? kids[0]!);
    }
  };
  return conv(tree.topNode);
}
