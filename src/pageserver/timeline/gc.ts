/**
 * Garbage collection of a timeline's history: the cutoff computation of Neon's refresh_gc_info +
 * gc() (`PUT …/do_gc`, and later a gc_period loop).
 *
 * What it does today: it moves `latest_gc_cutoff_lsn` forward (persisted in the metadata, never
 * backwards), after which reads and branches below the cutoff are refused. What it does NOT do
 * yet: remove layer files. Strata has no layer removal (nor compaction that would make old
 * layers redundant), so no disk space is freed; the result says `layers_removed: 0` and counts,
 * by Neon's rules, why each layer would be kept — or that it could go (`layers_removable`).
 *
 * The cutoff (Neon's rules):
 *   horizon_cutoff = last_record_lsn − gc_horizon (the tenant's gc_horizon, or the caller's
 *                    override from the do_gc body), 0 if that is negative;
 *   pitr_cutoff    = pitr_interval 0 → horizon_cutoff; else findLsnForTimestamp(now − pitr_interval):
 *                    present → its LSN; future (no commit since then) → horizon_cutoff;
 *                    past / nodata (no commit-time information) → the current cutoff (keep all);
 *   new cutoff     = min(horizon_cutoff, disk_consistent_lsn, pitr_cutoff); it moves only if it
 *                    is above the current one.
 * disk_consistent_lsn bounds it because a restart replays WAL from there: history above it is not
 * in layer files yet. So a GC right after ingest moves nothing until a checkpoint (or the flush
 * loop) has made the WAL durable — callers wanting an immediate effect checkpoint first.
 *
 * Child branches: as in Neon the cutoff moves regardless of the branch points of child timelines
 * below it. A child reads at or below its branch point through its ancestor without the
 * ancestor's cutoff check (read.ts), so children keep working; what a child needs is the
 * ancestor's layers up to its branch point (`retain_lsns`), and those are what future layer
 * removal must keep (counted in `layers_needed_by_branches`). New branches below the cutoff are
 * refused (Tenant.branchTimeline).
 *
 * Concurrency: runs of the same tenant are serialised (Neon's gc_cs), so two do_gc calls do not
 * interleave their searches. Branch creation does not take this lock: a branch checked against
 * the old cutoff may be created just below a cutoff that moved meanwhile. Harmless while nothing
 * is removed; layer removal will need branch creation to take the lock too.
 */
import type { Lsn } from '../../postgres/lsn.ts';
import { formatLsn } from '../../postgres/lsn.ts';
import { InvalidInputError, assert } from '../../util/errors.ts';
import type { KeyRange } from '../../storage/key.ts';
import type { HistoricLayer } from '../../storage/layermap.ts';
import type { Tenant } from '../tenant.ts';
import { dateToTimestampUs, findLsnForTimestamp, type LsnForTimestampKind } from './lsntime.ts';
import type { Timeline } from './timeline.ts';

export interface GcOptions {
  /** Overrides the tenant's gc_horizon (bytes of WAL to keep behind last_record_lsn). */
  gcHorizonBytes?: bigint;
  /** The time the PITR window ends at (normally new Date()). */
  now: Date;
  signal?: AbortSignal;
}

/**
 * Neon's GcResult (counts of layers by the reason they are kept) plus what Strata did with the
 * cutoff. Layer counts are over the timeline's layer files (not in-memory layers).
 */
export interface GcResult {
  layers_total: number;
  /** Newer than the horizon cutoff. */
  layers_needed_by_cutoff: number;
  /** Newer than the PITR cutoff. */
  layers_needed_by_pitr: number;
  /** Start at or below a child's branch point. */
  layers_needed_by_branches: number;
  /** Still the newest data for some key (no image layer above it, below the new cutoff). */
  layers_not_updated: number;
  /** Always 0: Strata does not remove layers yet. */
  layers_removed: number;
  /** Layers Neon's GC would remove now (no reason to keep them); Strata keeps them. */
  layers_removable: number;
  elapsed_ms: number;
  /** latest_gc_cutoff_lsn after the run. */
  new_gc_cutoff_lsn: Lsn;
  previous_gc_cutoff_lsn: Lsn;
  cutoff_moved: boolean;
  horizon_cutoff_lsn: Lsn;
  pitr_cutoff_lsn: Lsn;
  /** What the PITR lookup found ('disabled' when pitr_interval is 0). */
  pitr_lookup: LsnForTimestampKind | 'disabled';
  /** Branch points of child timelines, ascending. */
  retain_lsns: Lsn[];
}

/**
 * The HTTP form: Neon's field names (`elapsed` in milliseconds, as Neon serialises it), plus
 * Strata's extra fields with LSNs as "X/X" text (`latest_gc_cutoff_lsn` = the cutoff after the run,
 * the name TimelineInfo uses).
 */
export function gcResultToJson(r: GcResult): Record<string, number | string | boolean | string[]> {
  return {
    layers_total: r.layers_total,
    layers_needed_by_cutoff: r.layers_needed_by_cutoff,
    layers_needed_by_pitr: r.layers_needed_by_pitr,
    layers_needed_by_branches: r.layers_needed_by_branches,
    layers_not_updated: r.layers_not_updated,
    layers_removed: r.layers_removed,
    elapsed: r.elapsed_ms,
    layers_removable: r.layers_removable,
    latest_gc_cutoff_lsn: formatLsn(r.new_gc_cutoff_lsn),
    new_gc_cutoff_lsn: formatLsn(r.new_gc_cutoff_lsn),
    previous_gc_cutoff_lsn: formatLsn(r.previous_gc_cutoff_lsn),
    cutoff_moved: r.cutoff_moved,
    horizon_cutoff_lsn: formatLsn(r.horizon_cutoff_lsn),
    pitr_cutoff_lsn: formatLsn(r.pitr_cutoff_lsn),
    pitr_lookup: r.pitr_lookup,
    retain_lsns: r.retain_lsns.map(formatLsn),
  };
}

const gcLocks = new WeakMap<Tenant, Promise<unknown>>();

/** Runs `fn` after every earlier GC run of the tenant has finished. */
async function withTenantGcLock<T>(tenant: Tenant, fn: () => Promise<T>): Promise<T> {
  const previous = gcLocks.get(tenant) ?? Promise.resolve();
  const run = previous.catch(() => undefined).then(fn);
  gcLocks.set(tenant, run.catch(() => undefined));
  return run;
}

const minLsn = (a: Lsn, b: Lsn): Lsn => (a < b ? a : b);

/** Moves the GC cutoff of `timeline` per Neon's rules (see the module comment). */
export async function gcTimeline(tenant: Tenant, timeline: Timeline, opts: GcOptions): Promise<GcResult> {
  const started = performance.now();
  tenant.checkActive();
  assert(tenant.getTimeline(timeline.timelineId) === timeline, 'GC of a timeline that is not the tenant\'s', timeline.context());
  if (opts.gcHorizonBytes !== undefined && opts.gcHorizonBytes < 0n) {
    throw new InvalidInputError(`gc_horizon must not be negative (got ${opts.gcHorizonBytes})`, timeline.context());
  }
  return withTenantGcLock(tenant, async () => {
    timeline.checkReadable();
    const conf = tenant.config;
    const horizonBytes = opts.gcHorizonBytes ?? BigInt(conf.gcHorizonBytes);
    const lastRecordLsn = timeline.lastRecordLsn;
    const horizonCutoff = lastRecordLsn > horizonBytes ? lastRecordLsn - horizonBytes : 0n;
    const retainLsns = tenant.listTimelines()
      .filter((t) => t.ancestor === timeline)
      .map((t) => t.ancestorLsn)
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

    let pitrCutoff: Lsn;
    let pitrLookup: GcResult['pitr_lookup'];
    if (conf.pitrIntervalMs === 0) {
      pitrCutoff = horizonCutoff;
      pitrLookup = 'disabled';
    } else {
      const ts = dateToTimestampUs(opts.now) - BigInt(conf.pitrIntervalMs) * 1000n;
      const found = await findLsnForTimestamp(timeline, ts, opts.signal !== undefined ? { signal: opts.signal } : {});
      pitrLookup = found.kind;
      switch (found.kind) {
        case 'present': pitrCutoff = found.lsn; break;
        case 'future': pitrCutoff = horizonCutoff; break;
        case 'past':
        case 'nodata': pitrCutoff = timeline.latestGcCutoffLsn; break;
      }
    }

    const horizon = minLsn(horizonCutoff, timeline.diskConsistentLsn);
    const newCutoff = minLsn(horizon, pitrCutoff);
    const previous = timeline.latestGcCutoffLsn;
    if (newCutoff > previous) {
      await timeline.advanceGcCutoff(newCutoff);
      timeline.log.info('GC cutoff advanced', {
        previous: formatLsn(previous), new_gc_cutoff_lsn: formatLsn(newCutoff), horizon_cutoff: formatLsn(horizon),
        pitr_cutoff: formatLsn(pitrCutoff), pitr_lookup: pitrLookup,
      });
    }
    const cutoff = timeline.latestGcCutoffLsn;

    const counts = classifyLayers(timeline.layers.historicLayers(), { horizon, pitrCutoff, retainLsns, cutoff });
    return {
      ...counts,
      layers_removed: 0,
      elapsed_ms: Math.round(performance.now() - started),
      new_gc_cutoff_lsn: cutoff,
      previous_gc_cutoff_lsn: previous,
      cutoff_moved: cutoff > previous,
      horizon_cutoff_lsn: horizon,
      pitr_cutoff_lsn: pitrCutoff,
      pitr_lookup: pitrLookup,
      retain_lsns: retainLsns,
    };
  });
}

interface LayerCounts {
  layers_total: number;
  layers_needed_by_cutoff: number;
  layers_needed_by_pitr: number;
  layers_needed_by_branches: number;
  layers_not_updated: number;
  layers_removable: number;
}

/** Neon's gc_timeline keep rules, in its order; the first that applies is counted. */
export function classifyLayers(layers: readonly HistoricLayer[], c: { horizon: Lsn; pitrCutoff: Lsn; retainLsns: readonly Lsn[]; cutoff: Lsn }): LayerCounts {
  const out: LayerCounts = {
    layers_total: 0, layers_needed_by_cutoff: 0, layers_needed_by_pitr: 0, layers_needed_by_branches: 0, layers_not_updated: 0, layers_removable: 0,
  };
  for (const l of layers) {
    out.layers_total++;
    const { start, end } = l.desc.lsnRange;
    if (end > c.horizon) out.layers_needed_by_cutoff++;
    else if (end > c.pitrCutoff) out.layers_needed_by_pitr++;
    else if (c.retainLsns.some((r) => start <= r)) out.layers_needed_by_branches++;
    else if (!imagesCover(layers, l.desc.keyRange, end, c.cutoff)) out.layers_not_updated++;
    else out.layers_removable++;
  }
  return out;
}

/** Whether image layers at LSNs in [fromLsn, toLsn) together cover all of `range`. */
function imagesCover(layers: readonly HistoricLayer[], range: KeyRange, fromLsn: Lsn, toLsn: Lsn): boolean {
  const ranges: KeyRange[] = [];
  for (const l of layers) {
    const d = l.desc;
    if (d.kind !== 'image' || d.lsnRange.start < fromLsn || d.lsnRange.start >= toLsn) continue;
    if (d.keyRange.end <= range.start || d.keyRange.start >= range.end) continue;
    ranges.push(d.keyRange);
  }
  ranges.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  let covered = range.start;
  for (const r of ranges) {
    if (r.start > covered) return false;
    if (r.end > covered) covered = r.end;
    if (covered >= range.end) return true;
  }
  return covered >= range.end;
}
