/**
 * A strict reader of the Prometheus text exposition format (0.0.4), for tests that check what a
 * /metrics endpoint reports: samples are compared by name and labels, never as whole strings, so
 * label order and number formatting do not matter. Any line it cannot parse is an error, so a
 * malformed exposition fails the test instead of silently losing samples.
 */

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface PromExposition {
  samples: PromSample[];
  /** Metric family name → TYPE (counter, gauge, histogram, …). */
  types: Map<string, string>;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

/** Like Prometheus (Go's ParseFloat): NaN and Inf in any letter case (prom-client writes "Nan"). */
function parseValue(text: string, line: string): number {
  const lower = text.toLowerCase();
  if (lower === '+inf' || lower === 'inf') return Infinity;
  if (lower === '-inf') return -Infinity;
  if (lower === 'nan') return NaN;
  const v = Number(text);
  if (text === '' || Number.isNaN(v)) throw new Error(`bad sample value "${text}" in line: ${line}`);
  return v;
}

/** Parses a whole exposition; throws on the first line that is not valid. */
export function parsePrometheusText(text: string): PromExposition {
  const samples: PromSample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    if (line.startsWith('#')) {
      const m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
      if (m !== null) types.set(m[1]!, m[2]!);
      else if (!/^# (HELP|TYPE) /.test(line) && !line.startsWith('# ')) throw new Error(`bad comment line: ${line}`);
      continue;
    }
    const nameMatch = NAME.exec(line);
    if (nameMatch === null) throw new Error(`bad sample line: ${line}`);
    const name = nameMatch[0];
    let rest = line.slice(name.length);
    const labels: Record<string, string> = {};
    if (rest.startsWith('{')) {
      rest = rest.slice(1);
      for (let guard = 0; !rest.startsWith('}'); guard++) {
        if (guard > 1000) throw new Error(`too many labels in line: ${line}`);
        const ln = LABEL_NAME.exec(rest);
        if (ln === null || rest[ln[0].length] !== '=' || rest[ln[0].length + 1] !== '"') throw new Error(`bad label in line: ${line}`);
        rest = rest.slice(ln[0].length + 2);
        let value = '';
        let i = 0;
        for (; i < rest.length && rest[i] !== '"'; i++) {
          if (rest[i] === '\\') {
            const next = rest[++i];
            value += next === 'n' ? '\n' : next === '\\' ? '\\' : next === '"' ? '"' : `\\${next ?? ''}`;
          } else {
            value += rest[i];
          }
        }
        if (i >= rest.length) throw new Error(`unterminated label value in line: ${line}`);
        if (Object.hasOwn(labels, ln[0])) throw new Error(`duplicate label ${ln[0]} in line: ${line}`);
        labels[ln[0]] = value;
        rest = rest.slice(i + 1);
        if (rest.startsWith(',')) rest = rest.slice(1);
        else if (!rest.startsWith('}')) throw new Error(`bad label separator in line: ${line}`);
      }
      rest = rest.slice(1);
    }
    const parts = rest.trim().split(/\s+/);
    if (!rest.startsWith(' ') || parts.length < 1 || parts.length > 2) throw new Error(`bad sample line: ${line}`);
    samples.push({ name, labels, value: parseValue(parts[0]!, line) });
  }
  return { samples, types };
}

/** Samples named `name` whose labels include every pair of `labels`. */
export function findSamples(exp: PromExposition, name: string, labels: Record<string, string> = {}): PromSample[] {
  return exp.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The value of the one sample named `name` with exactly these labels; undefined if there is none. */
export function sampleValue(exp: PromExposition, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.keys(labels).length;
  const found = findSamples(exp, name, labels).filter((s) => Object.keys(s.labels).length === want);
  if (found.length > 1) throw new Error(`${found.length} samples ${name}${JSON.stringify(labels)}`);
  return found[0]?.value;
}
