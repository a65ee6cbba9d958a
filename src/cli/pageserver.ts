/**
 * `strata pageserver`: runs one pageserver in the foreground until SIGINT/SIGTERM.
 *
 * The process owns a work directory (tenants, timelines, layer files), serves the management API
 * over HTTP (src/pageserver/http/) and the page service over the libpq protocol (basebackups), and
 * streams WAL of its timelines from safekeepers found through the storage broker.
 *
 * It prints one line saying where it listens once both listeners are up (scripts wait for that or
 * for GET /v1/status), then logs to stderr. On a signal it stops the HTTP API first (no new
 * requests), then WAL intake, flushes everything ingested into layer files (so a restart resumes
 * exactly there) and exits 0; a second signal exits at once without the flush — which loses
 * nothing either, because a restart re-reads the WAL above disk_consistent_lsn from the
 * safekeepers.
 */
import { InvalidInputError } from '../util/errors.ts';
import { waitForShutdownSignal } from './signals.ts';
import type { Logger } from '../util/log.ts';
import { Pageserver } from '../pageserver/pageserver.ts';
import { startPageserverHttp } from '../pageserver/http/server.ts';
import { TENANT_CONFIG_DEFAULTS, mergeTenantConfig, parseKeyValueSettings } from '../pageserver/tenantconfig.ts';
import { DEFAULT_BLOCK_CACHE_BYTES, DEFAULT_PAGE_CACHE_BYTES, DEFAULT_WAIT_LSN_TIMEOUT_MS } from '../pageserver/tenantmgr.ts';
import { parseHostPort } from './safekeeper.ts';

export interface RunPageserverOptions {
  id: string;
  workdir: string;
  listenHttp: string;
  listenPg: string;
  broker: string | null;
  pgBin?: string;
  /** Tenant config defaults as key=value (Neon's names). */
  tenantDefaults: readonly string[];
  log: Logger;
  stdout: NodeJS.WritableStream;
}

export async function runPageserver(opts: RunPageserverOptions): Promise<number> {
  if (!/^[0-9]{1,9}$/.test(opts.id) || Number(opts.id) === 0) throw new InvalidInputError(`--id must be a positive integer, got "${opts.id}"`);
  const nodeId = Number(opts.id);
  const http = parseHostPort(opts.listenHttp, '--listen-http');
  const pgAddr = parseHostPort(opts.listenPg, '--listen-pg');
  if (opts.broker !== null) parseHostPort(opts.broker, '--broker');
  const defaults = mergeTenantConfig(TENANT_CONFIG_DEFAULTS, parseKeyValueSettings(opts.tenantDefaults));
  const log = opts.log.child({ node_id: nodeId });
  const ps = await Pageserver.start({
    workdir: opts.workdir, pageCacheBytes: DEFAULT_PAGE_CACHE_BYTES, blockCacheBytes: DEFAULT_BLOCK_CACHE_BYTES,
    waitLsnTimeoutMs: DEFAULT_WAIT_LSN_TIMEOUT_MS, defaults, listenPg: pgAddr, brokerEndpoint: opts.broker, log,
  });
  let api;
  try {
    api = await startPageserverHttp({ pageserver: ps, nodeId, host: http.host, port: http.port, log, ...(opts.pgBin !== undefined ? { pgBinDir: opts.pgBin } : {}) });
  } catch (err) {
    await ps.shutdown({ flush: true });
    throw err;
  }
  opts.stdout.write(`pageserver ${nodeId}: HTTP on http://${http.host}:${api.port}, page service on ${pgAddr.host}:${ps.pageServicePort}, data in ${opts.workdir}\n`);
  await waitForShutdownSignal();
  log.info('shutting down: HTTP API, WAL intake, then a flush of everything ingested');
  await api.close();
  await ps.shutdown({ flush: true });
  return 0;
}
