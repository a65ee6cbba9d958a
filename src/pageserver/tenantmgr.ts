/**
 * The tenant manager: every tenant of one pageserver, and the resources they share.
 *
 * Directory: `<workdir>/tenants/<tenant_id>/…` (see tenant.ts). On open, each tenant directory is
 * loaded (leftover `.___temp` directories of interrupted creations are removed first); a tenant
 * that fails to load is kept in the map as Broken with its reason, so operators see it instead of
 * it silently disappearing.
 *
 * Shared resources, each bounded by an explicit size: the materialized page cache, the layer
 * index block cache, and the redo engine; and the pageserver's Prometheus metrics (metrics.ts),
 * whose per-tenant and per-timeline series are read from this manager's live tenants at every
 * scrape — a deleted tenant or timeline leaves no series behind.
 */
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { StrataError } from '../util/errors.ts';
import { TEMP_SUFFIX, fsyncDir } from '../util/durable.ts';
import { generateId, parseId, tryParseId } from '../util/ids.ts';
import { Logger, rootLogger } from '../util/log.ts';
import { BlockCache } from '../storage/layerfile/blockcache.ts';
import { FdCache } from '../storage/layerfile/fdcache.ts';
import { MaterializedPageCache } from '../storage/pagecache.ts';
import { BuiltinRedo, type Redo } from '../storage/redo.ts';
import { TENANT_CONFIG_DEFAULTS, type TenantConfig, type TenantConfigOverrides } from './tenantconfig.ts';
import { ConflictError, NotFoundError, Tenant, type SharedResources } from './tenant.ts';
import { PageserverMetrics, StorageOperation } from './metrics.ts';

export interface TenantManagerOptions {
  workdir: string;
  /** Materialized page cache size (Neon's page_cache_size is 8192 pages = 64 MiB). */
  pageCacheBytes: number;
  /** Layer index block cache size. */
  blockCacheBytes: number;
  /** Neon's wait_lsn_timeout (60 s). */
  waitLsnTimeoutMs: number;
  /** Most layer files open at once (Neon's max_file_descriptors); default DEFAULT_MAX_OPEN_LAYER_FILES. */
  maxOpenLayerFiles?: number;
  defaults?: TenantConfig;
  redo?: Redo;
  log?: Logger;
  /** Include prom-client's process and Node.js metrics in `metrics` (default true). */
  processMetrics?: boolean;
}

export const DEFAULT_PAGE_CACHE_BYTES = 8192 * 8192;
export const DEFAULT_BLOCK_CACHE_BYTES = 32 * 1024 * 1024;
export const DEFAULT_WAIT_LSN_TIMEOUT_MS = 60_000;
/** Well under the common 1024 descriptor limit, leaving room for sockets and WAL files. */
export const DEFAULT_MAX_OPEN_LAYER_FILES = 512;

export class TenantManager {
  readonly workdir: string;
  readonly tenantsDir: string;
  readonly shared: SharedResources;
  /** This pageserver's metrics: GET /metrics serves `metrics.registry`. */
  readonly metrics: PageserverMetrics;
  readonly log: Logger;
  private readonly tenants = new Map<string, Tenant>();
  private closed = false;

  private constructor(opts: TenantManagerOptions) {
    this.workdir = opts.workdir;
    this.tenantsDir = path.join(opts.workdir, 'tenants');
    this.log = opts.log ?? rootLogger;
    this.metrics = new PageserverMetrics({ tenants: () => this.tenants.values(), processMetrics: opts.processMetrics ?? true });
    this.shared = {
      redo: opts.redo ?? new BuiltinRedo(),
      pageCache: new MaterializedPageCache({ maxBytes: opts.pageCacheBytes }),
      blockCache: new BlockCache({ maxBytes: opts.blockCacheBytes }),
      fdCache: new FdCache({ maxOpenFiles: opts.maxOpenLayerFiles ?? DEFAULT_MAX_OPEN_LAYER_FILES }),
      waitLsnTimeoutMs: opts.waitLsnTimeoutMs,
      defaults: opts.defaults ?? TENANT_CONFIG_DEFAULTS,
      metrics: this.metrics,
    };
  }

  /** Opens (creating if needed) a pageserver work directory and loads every tenant in it. */
  static async open(opts: TenantManagerOptions): Promise<TenantManager> {
    const mgr = new TenantManager(opts);
    await mkdir(mgr.tenantsDir, { recursive: true });
    for (const name of (await readdir(mgr.tenantsDir)).sort()) {
      if (name.endsWith(TEMP_SUFFIX)) {
        await rm(path.join(mgr.tenantsDir, name), { recursive: true, force: true });
        await fsyncDir(mgr.tenantsDir);
        mgr.log.info('removed leftover of an interrupted tenant creation', { dir: name });
        continue;
      }
      const tenantId = tryParseId(name);
      if (tenantId === null) {
        mgr.log.warn('unknown entry in the tenants directory left alone', { name });
        continue;
      }
      const tenant = await Tenant.load({ tenantsDir: mgr.tenantsDir, tenantId, shared: mgr.shared, log: mgr.log });
      mgr.tenants.set(tenantId, tenant);
    }
    return mgr;
  }

  async createTenant(opts: { tenantId?: string; config?: TenantConfigOverrides } = {}): Promise<Tenant> {
    this.checkOpen();
    const tenantId = opts.tenantId === undefined ? generateId() : parseId(opts.tenantId, 'tenant');
    if (this.tenants.has(tenantId)) throw new ConflictError(`tenant ${tenantId} already exists`, { tenant: tenantId });
    const tenant = await this.metrics.timeStorageOp(StorageOperation.createTenant,
      () => Tenant.create({ tenantsDir: this.tenantsDir, tenantId, overrides: opts.config ?? {}, shared: this.shared, log: this.log }));
    this.tenants.set(tenantId, tenant);
    return tenant;
  }

  getTenant(tenantId: string): Tenant {
    const tenant = this.tenants.get(tenantId);
    if (tenant === undefined) throw new NotFoundError(`tenant ${tenantId} not found`, { tenant: tenantId });
    return tenant;
  }

  listTenants(): Tenant[] {
    return Array.from(this.tenants.values());
  }

  /** Stops the tenant and removes its directory. */
  async deleteTenant(tenantId: string): Promise<void> {
    const tenant = this.getTenant(tenantId);
    await tenant.shutdown({ flush: false });
    this.tenants.delete(tenantId);
    for (const tl of tenant.listTimelines()) this.shared.pageCache.dropTimeline(tl.cacheId);
    const aside = path.join(this.tenantsDir, tenantId + TEMP_SUFFIX);
    await rename(tenant.dir, aside);
    await fsyncDir(this.tenantsDir);
    await rm(aside, { recursive: true, force: true });
  }

  /** Stops every tenant; with `flush`, in-memory data is written first. */
  async shutdown(opts: { flush: boolean }): Promise<void> {
    this.closed = true;
    for (const tenant of this.tenants.values()) await tenant.shutdown(opts);
  }

  private checkOpen(): void {
    if (this.closed) throw new StrataError('shutting_down', 'the pageserver is shutting down');
  }
}
