/**
 * Prometheus metrics of one pageserver (served by the HTTP API on GET /metrics).
 *
 * One `Registry` per pageserver instance, never prom-client's global default registry: tests run
 * several pageservers in one process, and each must report only its own tenants. Names, labels
 * and buckets follow Neon's pageserver (pageserver/src/metrics.rs) where the concept is the same,
 * so dashboards and habits carry over; docs/metrics.md lists every metric.
 *
 * Three ways a metric gets its value, chosen by how often the event happens:
 *
 * 1. Hot paths (GetPage@LSN, wait_lsn, every ingested WAL record) touch no prom-client object.
 *    prom-client 15 rebuilds a label-hash string and a labels object on every observe/inc, even
 *    through a cached `histogram.labels(...)` child, so the hot paths write into preallocated
 *    plain state instead: `HistogramSeries` (a Float64Array of bucket counts + sum + count; one
 *    per timeline and one global) and plain number counters. Cost per GetPage: four
 *    performance.now() calls (start and end of the request and of its wait_lsn), and for each of
 *    three series (per-timeline, global, wait_lsn) a scan of at most 9 bucket bounds and three
 *    float additions; per WAL record: one bigint subtraction (end − start LSN, a small heap
 *    bigint: the only allocation, next to the many the decoder already makes) and two additions.
 *    Those states are turned into exposition samples at scrape time by `SeriesHistogram` (a
 *    minimal registry metric producing the same samples as a prom-client Histogram) and by
 *    Counter `collect()` callbacks. In redo_mode = verify, ingest also counts every compared block
 *    in the timeline's `RedoVerifyTally` (src/redo/ingestverify.ts: a map lookup by rmgr and
 *    record type and one addition), exposed as pageserver_redo_verify_blocks_total at scrape time.
 * 2. Values the pageserver already keeps (last_record_lsn, disk_consistent_lsn, layer file sizes,
 *    tenant states) are read at scrape time by `collect()` callbacks: ingest pays nothing.
 * 3. Rare events (layer flush, image creation, tenant creation, basebackup, a background loop
 *    overrun) use prom-client metrics directly.
 *
 * No series outlives its timeline: every per-timeline sample is produced at scrape time by walking
 * the tenant manager's live tenants and their timelines (the per-timeline hot-path state lives in
 * the timeline's own resources, `TimelineMetrics`). A deleted timeline or tenant is no longer in
 * that walk, so its series disappear with it; there is nothing to unregister and nothing to leak.
 *
 * Storage operation timings record successful operations only (Neon does the same: its timer is
 * stopped explicitly on success); GetPage and wait_lsn record every request, failed ones included,
 * like Neon's drop guards; the basebackup histogram labels each result `ok` or `error`.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import type { Lsn } from '../postgres/lsn.ts';
import { INGEST_VERIFY_RESULTS, RedoVerifyTally } from '../redo/ingestverify.ts';
import { TENANT_STATE_KINDS, type TenantStateKind } from './states.ts';

// ------------------------------------------------------------------------------------------------
// Closed sets of label values.

/** Storage operations timed per timeline and globally (Neon's StorageTimeOperation strings). */
export const StorageOperation = {
  layerFlush: 'layer flush',
  compact: 'compact',
  createImages: 'create images',
  loadLayerMap: 'load layer map',
  gc: 'gc',
  createTenant: 'create tenant',
  /** Strata: a full freeze + flush on request (HTTP checkpoint, end of timeline creation, shutdown). */
  checkpoint: 'checkpoint',
} as const;
export type StorageOperation = (typeof StorageOperation)[keyof typeof StorageOperation];

const STORAGE_OPERATIONS: readonly StorageOperation[] = Object.values(StorageOperation);
/** Operations that belong to a timeline (the others only have the global histogram). */
const TIMELINE_STORAGE_OPERATIONS: readonly StorageOperation[] = STORAGE_OPERATIONS.filter((op) => op !== StorageOperation.createTenant);
const TIMELINE_OP_INDEX = new Map<StorageOperation, number>(TIMELINE_STORAGE_OPERATIONS.map((op, i) => [op, i]));

/** smgr query types Strata serves (Neon's SmgrQueryType, snake_case). */
export const SmgrQueryType = {
  getPageAtLsn: 'get_page_at_lsn',
} as const;
export type SmgrQueryType = (typeof SmgrQueryType)[keyof typeof SmgrQueryType];

/** Periodic background loops (Neon's BackgroundLoopKind, snake_case). */
export const BackgroundLoopKind = {
  /** Freezes open layers whose checkpoint_timeout passed (Tenant's background tick). */
  ingestHouseKeeping: 'ingest_house_keeping',
  gc: 'gc',
  compaction: 'compaction',
} as const;
export type BackgroundLoopKind = (typeof BackgroundLoopKind)[keyof typeof BackgroundLoopKind];

/** Result label of pageserver_basebackup_query_seconds. */
export const BasebackupResult = { ok: 'ok', error: 'error' } as const;
export type BasebackupResult = (typeof BasebackupResult)[keyof typeof BasebackupResult];

// ------------------------------------------------------------------------------------------------
// Buckets (seconds), as in Neon.

/** Operations on the query path: 1 µs … 100 s by decades. */
export const CRITICAL_OP_BUCKETS: readonly number[] = [0.000_001, 0.000_010, 0.000_100, 0.001, 0.010, 0.100, 1, 10, 100];
/** Background storage operations. */
export const STORAGE_OP_BUCKETS: readonly number[] = [0.010, 0.100, 1, 10, 100, 1000];
/** Basebackups, which gate compute start-up. */
export const COMPUTE_STARTUP_BUCKETS: readonly number[] = [
  5, 10, 20, 30, 50, 70, 100, 120, 150, 200, 250, 300, 350, 400, 450, 500, 600, 800, 1000,
  1500, 2000, 2500, 3000, 5000, 10000, 20000, 40000, 60000,
].map((ms) => ms / 1000);

// ------------------------------------------------------------------------------------------------
// Allocation-free histogram state and its exposition.

/** One histogram series: fixed bounds, counts per bucket (non-cumulative; the last is +Inf). */
export class HistogramSeries {
  readonly bounds: readonly number[];
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }

  /** Records one observation: the first bucket whose bound is ≥ the value (Prometheus `le`). */
  observe(value: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.counts[i] = this.counts[i]! + 1;
    this.sum += value;
    this.count++;
  }

  reset(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}

type Labels = Record<string, string>;
interface LabelledSeries {
  labels: Labels;
  series: HistogramSeries;
}
interface Sample {
  labels: Record<string, string | number>;
  value: number;
  metricName: string;
}

/**
 * A histogram metric whose series are supplied at scrape time. It implements the part of the
 * prom-client metric interface a Registry uses (name, help, type, aggregator, get(), reset()) and
 * produces the same samples as a prom-client Histogram: cumulative `_bucket{le}` samples, `+Inf`,
 * `_sum` and `_count` (test/unit/pageserver-metrics.test.ts compares the two).
 */
class SeriesHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly series: () => Iterable<LabelledSeries>;

  constructor(opts: { name: string; help: string; registry: Registry; series: () => Iterable<LabelledSeries> }) {
    this.name = opts.name;
    this.help = opts.help;
    this.series = opts.series;
    // The Registry only calls the members above; see the class comment.
    opts.registry.registerMetric(this as unknown as Metric);
  }

  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Sample[] }> {
    const values: Sample[] = [];
    const bucket = `${this.name}_bucket`;
    for (const { labels, series } of this.series()) {
      let cumulative = 0;
      for (let i = 0; i < series.bounds.length; i++) {
        cumulative += series.counts[i]!;
        values.push({ labels: { ...labels, le: series.bounds[i]! }, value: cumulative, metricName: bucket });
      }
      values.push({ labels: { ...labels, le: '+Inf' }, value: series.count, metricName: bucket });
      values.push({ labels, value: series.sum, metricName: `${this.name}_sum` });
      values.push({ labels, value: series.count, metricName: `${this.name}_count` });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values });
  }

  reset(): void {
    for (const { series } of this.series()) series.reset();
  }
}

// ------------------------------------------------------------------------------------------------
// What the metrics read at scrape time (satisfied structurally by Tenant and Timeline).

export interface MetricsTimelineSource {
  readonly tenantId: string;
  readonly timelineId: string;
  readonly lastRecordLsn: Lsn;
  readonly diskConsistentLsn: Lsn;
  readonly layers: { historicLayers(): readonly { readonly sizeBytes: number }[] };
  readonly resources: { readonly metrics: TimelineMetrics };
}

export interface MetricsTenantSource {
  readonly state: TenantStateKind;
  listTimelines(): Iterable<MetricsTimelineSource>;
}

export interface PageserverMetricsOptions {
  /** The live tenants (the tenant manager's map), walked at every scrape. */
  tenants: () => Iterable<MetricsTenantSource>;
  /** Include prom-client's process and Node.js metrics (default true). */
  processMetrics?: boolean;
}

/** Bytes of the layer files of a timeline on local disk (Neon's resident physical size). */
export function residentPhysicalSizeBytes(timeline: MetricsTimelineSource): number {
  let total = 0;
  for (const layer of timeline.layers.historicLayers()) total += layer.sizeBytes;
  return total;
}

/**
 * prom-client's default metrics start an event-loop-delay monitor and a GC observer that are
 * never stopped, so they are created once per process (in a registry of their own) and the same
 * metric objects are registered in every pageserver registry.
 */
let processRegistry: Registry | null = null;
function processMetricObjects(): Metric[] {
  if (processRegistry === null) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  // Typed as plain metric objects; at run time they are the prom-client metrics created above.
  return processRegistry.getMetricsAsArray() as unknown as Metric[];
}

// ------------------------------------------------------------------------------------------------

export class PageserverMetrics {
  readonly registry = new Registry();
  private readonly tenants: () => Iterable<MetricsTenantSource>;

  // Hot-path state (see the module comment).
  /** pageserver_smgr_query_seconds_global{smgr_query_type="get_page_at_lsn"}. */
  readonly getPageGlobal = new HistogramSeries(CRITICAL_OP_BUCKETS);
  /** pageserver_wait_lsn_seconds. */
  readonly waitLsn = new HistogramSeries(CRITICAL_OP_BUCKETS);
  private walRecords = 0;
  private walBytes = 0;

  private readonly storageOpGlobal: Histogram<'operation'>;
  private readonly basebackupSeconds: Histogram<'result'>;
  private readonly loopOverruns: Counter<'task' | 'period'>;

  constructor(opts: PageserverMetricsOptions) {
    this.tenants = opts.tenants;
    const registers = [this.registry];
    const self = this;
    const timelineLabels = (tl: MetricsTimelineSource): Labels => ({ tenant_id: tl.tenantId, timeline_id: tl.timelineId });

    // Storage operations.
    this.storageOpGlobal = new Histogram({
      name: 'pageserver_storage_operations_seconds_global', help: 'Time spent on storage operations',
      labelNames: ['operation'] as const, buckets: [...STORAGE_OP_BUCKETS], registers,
    });
    for (const op of STORAGE_OPERATIONS) this.storageOpGlobal.zero({ operation: op });
    const perTimelineOps = (name: string, help: string, pick: (tm: TimelineMetrics, i: number) => number): void => {
      new Counter({
        name, help, labelNames: ['operation', 'tenant_id', 'timeline_id'] as const, registers,
        collect() {
          this.reset();
          for (const tl of self.timelines()) {
            const tm = tl.resources.metrics;
            for (let i = 0; i < TIMELINE_STORAGE_OPERATIONS.length; i++) {
              this.inc({ operation: TIMELINE_STORAGE_OPERATIONS[i]!, tenant_id: tl.tenantId, timeline_id: tl.timelineId }, pick(tm, i));
            }
          }
        },
      });
    };
    perTimelineOps('pageserver_storage_operations_seconds_count', 'Count of storage operations with operation, tenant and timeline dimensions', (tm, i) => tm.opCount[i]!);
    perTimelineOps('pageserver_storage_operations_seconds_sum', 'Total time spent on storage operations with operation, tenant and timeline dimensions', (tm, i) => tm.opSeconds[i]!);

    // GetPage@LSN and wait_lsn.
    new SeriesHistogram({
      name: 'pageserver_smgr_query_seconds', registry: this.registry,
      help: 'Time spent on smgr query handling, aggregated by query type and tenant/timeline.',
      series: function* () {
        for (const tl of self.timelines()) {
          yield { labels: { smgr_query_type: SmgrQueryType.getPageAtLsn, ...timelineLabels(tl) }, series: tl.resources.metrics.getPage };
        }
      },
    });
    new SeriesHistogram({
      name: 'pageserver_smgr_query_seconds_global', registry: this.registry,
      help: 'Time spent on smgr query handling, aggregated by query type.',
      series: () => [{ labels: { smgr_query_type: SmgrQueryType.getPageAtLsn }, series: this.getPageGlobal }],
    });
    new SeriesHistogram({
      name: 'pageserver_wait_lsn_seconds', registry: this.registry, help: 'Time spent waiting for WAL to arrive',
      series: () => [{ labels: {}, series: this.waitLsn }],
    });

    // WAL ingest.
    new Counter({
      name: 'pageserver_wal_ingest_records_received', help: 'Number of WAL records ingested (from a compute, safekeepers or WAL files at import)', registers,
      collect() { this.reset(); this.inc(self.walRecords); },
    });
    new Counter({
      name: 'pageserver_wal_ingest_bytes_received', help: 'Bytes of WAL ingested (the LSN distance the ingested records cover)', registers,
      collect() { this.reset(); this.inc(self.walBytes); },
    });

    // Redo verification (redo_mode = verify): blocks whose consistency image was compared with
    // Strata's redo, per timeline, rmgr, record type and result. Only record types seen appear.
    new Counter({
      name: 'pageserver_redo_verify_blocks_total',
      help: 'Blocks with a wal_consistency_checking image compared with Strata\'s TypeScript redo (redo_mode = verify), by rmgr, record type and result',
      labelNames: ['tenant_id', 'timeline_id', 'rmgr', 'record_type', 'result'] as const, registers,
      collect() {
        this.reset();
        for (const tl of self.timelines()) {
          for (const t of tl.resources.metrics.redoVerify.types()) {
            for (let i = 0; i < INGEST_VERIFY_RESULTS.length; i++) {
              this.inc({ tenant_id: tl.tenantId, timeline_id: tl.timelineId, rmgr: t.rmgr, record_type: t.recordType, result: INGEST_VERIFY_RESULTS[i]! }, t.counts[i]!);
            }
          }
        }
      },
    });

    // Per-timeline positions and sizes, read at scrape time.
    const timelineGauge = (name: string, help: string, pick: (tl: MetricsTimelineSource) => number): void => {
      new Gauge({
        name, help, labelNames: ['tenant_id', 'timeline_id'] as const, registers,
        collect() {
          this.reset();
          for (const tl of self.timelines()) this.set(timelineLabels(tl), pick(tl));
        },
      });
    };
    timelineGauge('pageserver_last_record_lsn', 'Last record LSN grouped by timeline', (tl) => Number(tl.lastRecordLsn));
    timelineGauge('pageserver_disk_consistent_lsn', 'Disk consistent LSN grouped by timeline', (tl) => Number(tl.diskConsistentLsn));
    timelineGauge('pageserver_resident_physical_size', "The size of the layer files present in the pageserver's filesystem.", residentPhysicalSizeBytes);
    new Gauge({
      name: 'pageserver_resident_physical_size_global', help: 'Like `pageserver_resident_physical_size`, but without tenant/timeline dimensions.', registers,
      collect() {
        let total = 0;
        for (const tl of self.timelines()) total += residentPhysicalSizeBytes(tl);
        this.set(total);
      },
    });

    // Tenants.
    new Gauge({
      name: 'pageserver_tenant_states_count', help: 'Count of tenants per state', labelNames: ['state'] as const, registers,
      collect() {
        const counts = new Map<TenantStateKind, number>(TENANT_STATE_KINDS.map((k) => [k, 0]));
        for (const t of self.tenants()) counts.set(t.state, (counts.get(t.state) ?? 0) + 1);
        this.reset();
        for (const [state, n] of counts) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'pageserver_broken_tenants_count', help: 'Number of broken tenants', registers,
      collect() {
        let n = 0;
        for (const t of self.tenants()) if (t.state === 'Broken') n++;
        this.set(n);
      },
    });

    // Background loops and basebackup.
    this.loopOverruns = new Counter({
      name: 'pageserver_background_loop_period_overrun_count', help: 'Incremented whenever a background loop iteration took longer than its period.',
      labelNames: ['task', 'period'] as const, registers,
    });
    this.basebackupSeconds = new Histogram({
      name: 'pageserver_basebackup_query_seconds', help: 'Histogram of basebackup queries durations, by result type',
      labelNames: ['result'] as const, buckets: [...COMPUTE_STARTUP_BUCKETS], registers,
    });
    for (const result of Object.values(BasebackupResult)) this.basebackupSeconds.zero({ result });

    if (opts.processMetrics ?? true) for (const m of processMetricObjects()) this.registry.registerMetric(m);
  }

  /** Content type of `registry.metrics()` (Prometheus text format 0.0.4). */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text (GET /metrics). */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  /** The per-timeline state a new timeline keeps in its resources. */
  forTimeline(tenantId: string, timelineId: string): TimelineMetrics {
    return new TimelineMetrics(this, tenantId, timelineId);
  }

  private *timelines(): Generator<MetricsTimelineSource> {
    for (const tenant of this.tenants()) yield* tenant.listTimelines();
  }

  // ----- recording -----

  /** One WAL record ingested, covering `walBytes` of WAL. Hot path: two additions. */
  walRecordIngested(walBytes: number): void {
    this.walRecords++;
    this.walBytes += walBytes;
  }

  /** A storage operation without a timeline (create tenant), or the global half of a timeline's. */
  storageOpDone(op: StorageOperation, seconds: number): void {
    this.storageOpGlobal.observe({ operation: op }, seconds);
  }

  /** Runs `fn` and records its duration under `op` if it succeeds. */
  async timeStorageOp<T>(op: StorageOperation, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    const result = await fn();
    this.storageOpDone(op, (performance.now() - started) / 1000);
    return result;
  }

  observeBasebackup(seconds: number, result: BasebackupResult): void {
    this.basebackupSeconds.observe({ result }, seconds);
  }

  /**
   * Reports one iteration of a periodic background loop; counts an overrun (and returns true)
   * when it took at least its period. The period label is in seconds, as in Neon.
   */
  backgroundLoopIteration(task: BackgroundLoopKind, periodMs: number, elapsedMs: number): boolean {
    if (periodMs <= 0 || elapsedMs < periodMs) return false;
    this.loopOverruns.inc({ task, period: String(periodMs / 1000) });
    return true;
  }
}

/**
 * A timeline's own metric state, kept in its resources (TimelineResources.metrics) so that the
 * hot paths reach it with two property loads and no lookup, and so that it goes away with the
 * timeline.
 */
export class TimelineMetrics {
  readonly pageserver: PageserverMetrics;
  readonly tenantId: string;
  readonly timelineId: string;
  /** pageserver_smgr_query_seconds{smgr_query_type="get_page_at_lsn", tenant_id, timeline_id}. */
  readonly getPage = new HistogramSeries(CRITICAL_OP_BUCKETS);
  /** Per TIMELINE_STORAGE_OPERATIONS index: successful operations and their total seconds. */
  readonly opCount = new Float64Array(TIMELINE_STORAGE_OPERATIONS.length);
  readonly opSeconds = new Float64Array(TIMELINE_STORAGE_OPERATIONS.length);
  /**
   * redo_mode = verify: counts per rmgr / record type / result and the first mismatches (written by
   * WAL ingest, read by the scrape and GET …/redo_verify). Empty, and never written, in other modes.
   */
  readonly redoVerify = new RedoVerifyTally();

  constructor(pageserver: PageserverMetrics, tenantId: string, timelineId: string) {
    this.pageserver = pageserver;
    this.tenantId = tenantId;
    this.timelineId = timelineId;
  }

  /** One GetPage@LSN request (wait included). Hot path: no allocation. */
  observeGetPage(seconds: number): void {
    this.getPage.observe(seconds);
    this.pageserver.getPageGlobal.observe(seconds);
  }

  /** One wait for WAL (global histogram). */
  observeWaitLsn(seconds: number): void {
    this.pageserver.waitLsn.observe(seconds);
  }

  walRecordIngested(walBytes: number): void {
    this.pageserver.walRecordIngested(walBytes);
  }

  /** A successful storage operation on this timeline: per-timeline count/sum and the global histogram. */
  storageOpDone(op: StorageOperation, seconds: number): void {
    const i = TIMELINE_OP_INDEX.get(op);
    if (i !== undefined) {
      this.opCount[i] = this.opCount[i]! + 1;
      this.opSeconds[i] = this.opSeconds[i]! + seconds;
    }
    this.pageserver.storageOpDone(op, seconds);
  }

  /** Runs `fn` and records its duration under `op` if it succeeds. */
  async timeStorageOp<T>(op: StorageOperation, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    const result = await fn();
    this.storageOpDone(op, (performance.now() - started) / 1000);
    return result;
  }
}
