/**
 * What a timeline borrows from its tenant and pageserver: shared caches, the redo engine, the
 * tenant's live configuration and the limits of the read path. Passed explicitly so tests can
 * build a timeline with small caches and tight limits.
 */
import type { BlockCache } from '../../storage/layerfile/blockcache.ts';
import type { FdCache } from '../../storage/layerfile/fdcache.ts';
import type { MaterializedPageCache } from '../../storage/pagecache.ts';
import type { Redo } from '../../storage/redo.ts';
import type { TenantConfig } from '../tenantconfig.ts';

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
}
