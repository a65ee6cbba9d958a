/**
 * What the redo verifier reports and how it is shown: the report types (per record type counters,
 * mismatches, failures, cache figures), the per-rmgr roll-up, and the plain-text table that
 * `strata redo verify` prints. Kept apart from the verifier so that report consumers (the CLI,
 * tests) depend on a small module of types and pure functions, and so the verifier file holds
 * only the replay logic. src/redo/verify.ts re-exports everything public here.
 */
import { formatLsn, type Lsn } from '../../postgres/lsn.ts';

/** Counters of one record type (rmgr + pg_waldump type name). Block counters count block references. */
export interface RedoTypeStats {
  rmid: number;
  rmgr: string;
  type: string;
  records: number;
  blocks: number;
  /** Apply images restored (no redo needed). */
  restored: number;
  /** Our redo ran without error. */
  applied: number;
  /** ...and the consistency image matched under masking. */
  verified: number;
  mismatched: number;
  /** No TypeScript redo for this rmgr, or the redo declined this record ('redo_unsupported'). */
  unsupported: number;
  /** Our redo threw ('redo_failed' or any other error), or an image could not be restored. */
  failed: number;
  /** No previous version of the block was known and the block is not willInit. */
  skippedNoBase: number;
}

export interface ByteDiff {
  offset: number;
  /** Which part of the page: a header field, a line pointer, the tuple area, the special area. */
  where: string;
  ours: number;
  theirs: number;
}

export interface RedoMismatch {
  rmgr: string;
  type: string;
  lsn: string;
  endLsn: string;
  blockId: number;
  rel: string;
  fork: string;
  blkno: number;
  /** Bytes that differ after masking (0 when masking itself failed, see `reason`). */
  differingBytes: number;
  firstDiffs: ByteDiff[];
  /** Set when the pages could not be compared (e.g. masking refused an invalid header). */
  reason?: string;
}

export interface RedoFailure {
  rmgr: string;
  type: string;
  lsn: string;
  blockId: number | null;
  rel: string | null;
  fork: string | null;
  blkno: number | null;
  code: string;
  message: string;
}

export interface VerifyReport {
  records: number;
  firstLsn: Lsn | null;
  lastEndLsn: Lsn | null;
  /** Sorted by rmid, then type name. */
  types: RedoTypeStats[];
  totals: Omit<RedoTypeStats, 'rmid' | 'rmgr' | 'type'>;
  mismatches: RedoMismatch[];
  mismatchesNotKept: number;
  failures: RedoFailure[];
  failuresNotKept: number;
  pages: {
    maxPages: number;
    cachedAtEnd: number;
    evicted: number;
    /** Forgotten because of truncate/drop/create records (or an unparsable such record). */
    dropped: number;
    /** Replaced by a consistency image after a mismatch / failure / unsupported / missing base. */
    resynced: number;
    /** Visibility-map pages whose bits were cleared as a side effect of heap records. */
    vmClears: number;
  };
}

export function emptyCounts(): Omit<RedoTypeStats, 'rmid' | 'rmgr' | 'type'> {
  return { records: 0, blocks: 0, restored: 0, applied: 0, verified: 0, mismatched: 0, unsupported: 0, failed: 0, skippedNoBase: 0 };
}

/** Aggregates per-type counters to one row per rmgr. */
export function statsByRmgr(report: VerifyReport): RedoTypeStats[] {
  const by = new Map<number, RedoTypeStats>();
  for (const t of report.types) {
    let s = by.get(t.rmid);
    if (s === undefined) {
      s = { rmid: t.rmid, rmgr: t.rmgr, type: '*', ...emptyCounts() };
      by.set(t.rmid, s);
    }
    for (const k of Object.keys(emptyCounts()) as (keyof ReturnType<typeof emptyCounts>)[]) s[k] += t[k];
  }
  return [...by.values()].sort((a, b) => a.rmid - b.rmid);
}

/** A plain-text table of the report (types with block references), then mismatches and failures. */
export function formatVerifyReport(report: VerifyReport, opts: { allTypes?: boolean } = {}): string {
  const cols = ['rmgr', 'type', 'records', 'blocks', 'restored', 'applied', 'verified', 'mismatched', 'unsupported', 'failed', 'no_base'] as const;
  const rows: string[][] = [];
  const rowOf = (t: RedoTypeStats): string[] => [
    t.rmgr, t.type, String(t.records), String(t.blocks), String(t.restored), String(t.applied), String(t.verified),
    String(t.mismatched), String(t.unsupported), String(t.failed), String(t.skippedNoBase),
  ];
  for (const t of report.types) if (opts.allTypes === true || t.blocks > 0) rows.push(rowOf(t));
  rows.push(rowOf({ rmid: -1, rmgr: 'TOTAL', type: '', ...report.totals }));
  const widths = cols.map((c, i) => Math.max(c.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  const out: string[] = [];
  const range = report.firstLsn === null ? 'no records' : `${formatLsn(report.firstLsn)} .. ${formatLsn(report.lastEndLsn!)}`;
  out.push(`redo verify: ${report.records} records (${range})`);
  out.push(line(cols));
  out.push(line(widths.map((w) => '-'.repeat(w))));
  for (const r of rows) out.push(line(r));
  const p = report.pages;
  out.push(`pages: cached ${p.cachedAtEnd} (max ${p.maxPages}), evicted ${p.evicted}, dropped ${p.dropped}, resynced ${p.resynced}, vm clears ${p.vmClears}`);
  if (report.mismatches.length > 0) {
    out.push(`mismatches (first ${report.mismatches.length}${report.mismatchesNotKept > 0 ? `, ${report.mismatchesNotKept} more not shown` : ''}):`);
    for (const m of report.mismatches) {
      const diffs = m.firstDiffs.map((d) => `${d.offset} (${d.where}) ours 0x${d.ours.toString(16)} image 0x${d.theirs.toString(16)}`).join('; ');
      out.push(`  ${m.rmgr}/${m.type} at ${m.lsn} block #${m.blockId} rel ${m.rel} ${m.fork} blk ${m.blkno}: ` +
        (m.reason ?? `${m.differingBytes} bytes differ: ${diffs}`));
    }
  }
  if (report.failures.length > 0) {
    out.push(`failures (first ${report.failures.length}${report.failuresNotKept > 0 ? `, ${report.failuresNotKept} more not shown` : ''}):`);
    for (const f of report.failures) out.push(`  ${f.rmgr}/${f.type} at ${f.lsn}${f.blockId === null ? '' : ` block #${f.blockId} rel ${f.rel} ${f.fork} blk ${f.blkno}`}: [${f.code}] ${f.message}`);
  }
  return out.join('\n');
}
