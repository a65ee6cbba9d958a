/**
 * What a timeline borrows from its tenant and pageserver: shared caches, the redo engine, the
 * tenant's live configuration, the limits of the read path and its metrics. Passed explicitly so
 * tests can build a timeline with small caches and tight limits.
 */
import type { BlockCache } from '../../storage/layerfile/blockcache.ts';
import type { FdCache } from '../../storage/layerfile/fdcache.ts';
import type { MaterializedPageCache } from '../../storage/pagecache.ts';
import type { Redo } from '../../storage/redo.ts';
import type { TenantConfig } from '../tenantconfig.ts';
import type { TimelineMetrics } from '../metrics.ts';

export interface TimelineResources {
  redo: Redo;
  pageCache: MaterializedPageCache;
  blockCache: BlockCache;
  /** Bounds the number of open layer files. */
  fdCache: FdCache;
  /** The tenant's configuration now (it can change while the timeline runs). */
  config: () => TenantConfig;
  /** How long a read or branch waits for WAL that has not arrived (Neon's wait_lsn_timeout). */
  waitLsnTimeoutMs: number;
  /**
   * This timeline's metric state (one object per timeline, linked to the pageserver's registry);
   * the read and ingest hot paths record into it without any lookup (metrics.ts).
   */
  metrics: TimelineMetrics;
}
