/**
 * Compute endpoints of the local control plane: an unmodified PostgreSQL 15 started by the CLI on a
 * timeline of the (separate) pageserver process, left running after the CLI exits.
 *
 * Layout: `<state>/endpoints/<name>/` holds `endpoint.json` (which tenant/timeline, port, and the
 * start LSN and term of the last start; versioned, strict, written durably), `pgdata/` (disposable:
 * rebuilt from a basebackup at every start) and `postgres.log`.
 *
 * A start does what src/compute/endpoint.ts does in-process with safekeepers, but every piece of
 * pageserver state comes over the wire:
 *   1. TimelineInfo over HTTP (system identifier, WAL segment size, last record LSN) and the
 *      tenant's effective redo_mode;
 *   2. the election among the cluster's safekeepers (election.ts) and the wait until a quorum
 *      commits the new term's start LSN;
 *   3. a basebackup at exactly that LSN over the page service (`basebackup <t> <tl> <lsn>`, a
 *      CopyOut tar the pageserver produces once it has ingested that far), unpacked with the tar
 *      reader into the same directory sink the in-process path uses (ownership and modes);
 *   4. the shared compute settings (computeSettings), postgres started detached and not tied to
 *      this process (outliveUs), and the safekeepers' slots.
 * Invariants:
 *   - At most one running endpoint per timeline (checked against every endpoint's live postmaster).
 *   - "Running" means pgdata/postmaster.pid names a live `postgres -D <that pgdata>` (pids.ts); a
 *     dead or reused pid is stale, and the next start first kills whatever is left of the old
 *     process group (orphaned backends of a SIGKILLed postmaster).
 *   - A tar entry that would land outside pgdata (absolute, `..`) or is not a file or directory
 *     is refused: the page service is trusted, but not to that degree.
 */
import { chmod, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { formatLsn, parseLsn, type Lsn } from '../postgres/lsn.ts';
import { readTar } from '../postgres/tar.ts';
import { writeFileDurable } from '../util/durable.ts';
import { InvalidInputError, StrataError } from '../util/errors.ts';
import { isCanonicalId } from '../util/ids.ts';
import type { Logger } from '../util/log.ts';
import type { BasebackupSink } from '../pageserver/basebackup.ts';
import { REDO_MODES, type RedoMode } from '../pageserver/tenantconfig.ts';
import { checkReachableByServerUser, computeSettings, createSafekeeperSlots, startComputeFromBasebackup } from '../compute/endpoint.ts';
import { runElection, waitForCommit, type SafekeeperAddress } from '../compute/election.ts';
import { freePort } from '../compute/postgresprocess.ts';
import type { PageserverClient } from './api.ts';
import { checkName, parseHostPortStrict, type StrataConfig } from './config.ts';
import { killGroup, readPidFile, runsPostgres, stopPid } from './pids.ts';
import { portIsFree } from './services.ts';

export const ENDPOINT_FILE_VERSION = 1;
const MAX_ENDPOINT_FILE_BYTES = 64 * 1024;
const MAX_ENDPOINTS = 1000;
/** How long a start waits for a quorum to commit the term's start LSN (and the basebackup for ingest). */
const COMMIT_WAIT_MS = 120_000;
const STOP_TIMEOUT_MS = 60_000;

export interface EndpointFile {
  version: typeof ENDPOINT_FILE_VERSION;
  name: string;
  tenant_id: string;
  timeline_id: string;
  port: number;
  /** The basebackup LSN of the last start (null before the first successful start). */
  start_lsn: string | null;
  /** The safekeeper term of the last start. */
  term: string | null;
}

export interface EndpointStatus extends EndpointFile {
  state: 'running' | 'stopped';
  pid: number | null;
  connection_string: string;
  dir: string;
}

export class EndpointError extends StrataError {
  constructor(message: string, context: Record<string, string | number> = {}) {
    super('endpoint_failed', message, context);
    this.name = 'EndpointError';
  }
}

export function endpointsDir(stateDir: string): string {
  return path.join(stateDir, 'endpoints');
}

export function endpointDir(stateDir: string, name: string): string {
  return path.join(endpointsDir(stateDir), checkName(name, 'endpoint'));
}

export function connectionString(port: number): string {
  return `postgresql://postgres@127.0.0.1:${port}/postgres`;
}

export function parseEndpointFile(text: string, where: string): EndpointFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new EndpointError(`${where}: not valid JSON (${(err as Error).message})`, { file: where });
  }
  const keys = ['version', 'name', 'tenant_id', 'timeline_id', 'port', 'start_lsn', 'term'];
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new EndpointError(`${where}: expected an object`, { file: where });
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!keys.includes(k)) throw new EndpointError(`${where}: unknown field "${k}"`, { file: where });
  for (const k of keys) if (!Object.hasOwn(o, k)) throw new EndpointError(`${where}: missing field "${k}"`, { file: where });
  const bad = (f: string): EndpointError => new EndpointError(`${where}: invalid ${f}`, { file: where });
  if (o['version'] !== ENDPOINT_FILE_VERSION) throw new EndpointError(`${where}: unsupported version ${JSON.stringify(o['version'])}`, { file: where });
  if (typeof o['name'] !== 'string') throw bad('name');
  if (typeof o['tenant_id'] !== 'string' || !isCanonicalId(o['tenant_id'])) throw bad('tenant_id');
  if (typeof o['timeline_id'] !== 'string' || !isCanonicalId(o['timeline_id'])) throw bad('timeline_id');
  if (typeof o['port'] !== 'number' || !Number.isInteger(o['port']) || o['port'] < 1 || o['port'] > 65535) throw bad('port');
  if (o['start_lsn'] !== null) {
    if (typeof o['start_lsn'] !== 'string') throw bad('start_lsn');
    try {
      parseLsn(o['start_lsn']);
    } catch {
      throw bad('start_lsn');
    }
  }
  if (o['term'] !== null && (typeof o['term'] !== 'string' || !/^[0-9]{1,20}$/.test(o['term']))) throw bad('term');
  return {
    version: ENDPOINT_FILE_VERSION, name: o['name'], tenant_id: o['tenant_id'], timeline_id: o['timeline_id'], port: o['port'],
    start_lsn: o['start_lsn'] as string | null, term: o['term'] as string | null,
  };
}

async function readEndpointFile(dir: string): Promise<EndpointFile | null> {
  const file = path.join(dir, 'endpoint.json');
  let text: string;
  try {
    const st = await stat(file);
    if (st.size > MAX_ENDPOINT_FILE_BYTES) throw new EndpointError(`${file} is larger than ${MAX_ENDPOINT_FILE_BYTES} bytes`, { file });
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  return parseEndpointFile(text, file);
}

async function writeEndpointFile(dir: string, ep: EndpointFile): Promise<void> {
  await writeFileDurable(path.join(dir, 'endpoint.json'), Buffer.from(JSON.stringify(ep, null, 2) + '\n'));
}

/** The live postmaster's pid for the endpoint in `dir`, or null (no pid file, or a stale one). */
export async function endpointPid(dir: string): Promise<{ pid: number | null; stalePid: number | null }> {
  const dataDir = path.join(dir, 'pgdata');
  const pid = await readPidFile(path.join(dataDir, 'postmaster.pid'));
  if (pid === null) return { pid: null, stalePid: null };
  return runsPostgres(pid, dataDir) ? { pid, stalePid: null } : { pid: null, stalePid: pid };
}

async function statusOf(dir: string, ep: EndpointFile): Promise<EndpointStatus> {
  const { pid } = await endpointPid(dir);
  return { ...ep, state: pid !== null ? 'running' : 'stopped', pid, connection_string: connectionString(ep.port), dir };
}

export async function listEndpoints(stateDir: string): Promise<EndpointStatus[]> {
  let names: string[];
  try {
    names = (await readdir(endpointsDir(stateDir))).sort();
  } catch {
    return [];
  }
  if (names.length > MAX_ENDPOINTS) throw new EndpointError(`more than ${MAX_ENDPOINTS} entries in ${endpointsDir(stateDir)}`);
  const out: EndpointStatus[] = [];
  for (const name of names) {
    const dir = path.join(endpointsDir(stateDir), name);
    const ep = await readEndpointFile(dir);
    if (ep !== null) out.push(await statusOf(dir, ep));
  }
  return out;
}

export async function getEndpoint(stateDir: string, name: string): Promise<EndpointStatus> {
  const dir = endpointDir(stateDir, name);
  const ep = await readEndpointFile(dir);
  if (ep === null) throw new EndpointError(`no endpoint named "${name}" (see \`strata endpoint list\`)`, { endpoint: name });
  return statusOf(dir, ep);
}

export function safekeeperAddresses(c: StrataConfig): SafekeeperAddress[] {
  return c.safekeepers.map((s) => ({ id: BigInt(s.id), pgConnstr: s.listen_pg, httpConnstr: `http://${s.listen_http}` }));
}

export interface StartEndpointOptions {
  stateDir: string;
  config: StrataConfig;
  api: PageserverClient;
  name: string;
  tenantId: string;
  timelineId: string;
  /** Default: the port of the endpoint's last start, else a free one. */
  port?: number;
  log: Logger;
  progress?: (line: string) => void;
}

/**
 * Starts (or restarts after a crash) endpoint `name` on the timeline; see the module comment.
 * Refuses when it already runs, when another endpoint runs on the timeline, and when the endpoint
 * exists for another timeline.
 */
export async function startEndpoint(o: StartEndpointOptions): Promise<EndpointStatus> {
  const dir = endpointDir(o.stateDir, o.name);
  const existing = await readEndpointFile(dir);
  if (existing !== null && (existing.tenant_id !== o.tenantId || existing.timeline_id !== o.timelineId)) {
    throw new EndpointError(`endpoint "${o.name}" belongs to timeline ${existing.timeline_id} of tenant ${existing.tenant_id}; pick another name`, { endpoint: o.name });
  }
  const { pid: runningPid, stalePid } = await endpointPid(dir);
  if (runningPid !== null) throw new EndpointError(`endpoint "${o.name}" is already running (pid ${runningPid}, ${connectionString(existing?.port ?? 0)})`, { endpoint: o.name });
  for (const other of await listEndpoints(o.stateDir)) {
    if (other.name !== o.name && other.state === 'running' && other.tenant_id === o.tenantId && other.timeline_id === o.timelineId) {
      throw new EndpointError(`timeline ${o.timelineId} already has a running endpoint ("${other.name}", port ${other.port}); stop it first (\`strata endpoint stop ${other.name}\`)`, { endpoint: other.name });
    }
  }
  // Leftovers of a postmaster that died hard (its backends notice only later): they share its group.
  if (stalePid !== null) killGroup(stalePid);

  const port = o.port ?? existing?.port ?? await freePort();
  if (!(await portIsFree({ host: '127.0.0.1', port }))) {
    throw new EndpointError(`cannot start endpoint "${o.name}": port ${port} is already in use by another program (choose one with --port)`, { endpoint: o.name, port });
  }
  // The timeline must exist (and the pageserver run) before anything is written.
  const info = await o.api.getTimeline(o.tenantId, o.timelineId);
  const tenantConf = await o.api.getTenantConfig(o.tenantId);
  // As root, postgres runs as the postgres OS user and must traverse into the endpoint directory.
  for (const d of [o.stateDir, endpointsDir(o.stateDir)]) {
    await mkdir(d, { recursive: true, mode: 0o755 });
    await chmod(d, 0o755);
  }
  await mkdir(dir, { recursive: true, mode: 0o755 });
  await checkReachableByServerUser(dir);
  await writeEndpointFile(dir, { version: ENDPOINT_FILE_VERSION, name: o.name, tenant_id: o.tenantId, timeline_id: o.timelineId, port, start_lsn: existing?.start_lsn ?? null, term: existing?.term ?? null });

  const redo = tenantConf.effective_config.redo_mode;
  const redoMode: RedoMode = redo !== undefined && (REDO_MODES as readonly string[]).includes(redo) ? redo : 'images';
  const safekeepers = safekeeperAddresses(o.config);

  o.progress?.(`electing a safekeeper term for timeline ${o.timelineId} (${safekeepers.length} safekeeper${safekeepers.length > 1 ? 's' : ''}) ...`);
  const election = await runElection({
    safekeepers, tenantId: o.tenantId, timelineId: o.timelineId, systemId: BigInt(info.pg_system_identifier),
    walSegSizeBytes: info.wal_seg_size, startLsnIfNew: parseLsn(info.last_record_lsn),
    compute: { host: '127.0.0.1', port, user: 'postgres' }, log: o.log,
  });
  const startLsn = election.startLsn;
  const now = await o.api.getTimeline(o.tenantId, o.timelineId);
  if (parseLsn(now.last_record_lsn) > startLsn) {
    throw new EndpointError(`the pageserver has WAL of timeline ${o.timelineId} up to ${now.last_record_lsn}, beyond the safekeepers' ${formatLsn(startLsn)}: it was written without these safekeepers`, { timeline: o.timelineId });
  }
  await waitForCommit({ safekeepers, tenantId: o.tenantId, timelineId: o.timelineId, lsn: startLsn, timeoutMs: COMMIT_WAIT_MS });

  o.progress?.(`term ${election.term} starts at ${formatLsn(startLsn)}; fetching a basebackup there and starting PostgreSQL on port ${port} ...`);
  const pageService = parseHostPortStrict(o.config.pageserver.listen_pg, 'pageserver.listen_pg');
  const { proc } = await startComputeFromBasebackup({
    dir, port, pgBinDir: o.config.pg_bin, outliveUs: true,
    settings: computeSettings({ port, socketDir: dir, redoMode, safekeepers, term: election.term }),
    fill: async (sink) => {
      await fetchBasebackup({ host: pageService.host, port: pageService.port, tenantId: o.tenantId, timelineId: o.timelineId, lsn: startLsn, sink });
      return startLsn;
    },
  });
  try {
    await createSafekeeperSlots(port, safekeepers);
  } catch (err) {
    await proc.stop('immediate');
    throw err;
  }
  const ep: EndpointFile = { version: ENDPOINT_FILE_VERSION, name: o.name, tenant_id: o.tenantId, timeline_id: o.timelineId, port, start_lsn: formatLsn(startLsn), term: election.term.toString() };
  await writeEndpointFile(dir, ep);
  return { ...ep, state: 'running', pid: proc.pid, connection_string: connectionString(port), dir };
}

/**
 * `basebackup <tenant> <timeline> <lsn>` over the page service, unpacked into `sink` as the tar
 * streams in (nothing is buffered whole).
 */
export async function fetchBasebackup(o: { host: string; port: number; tenantId: string; timelineId: string; lsn: Lsn; sink: BasebackupSink; timeoutMs?: number }): Promise<void> {
  const client = new pg.Client({ host: o.host, port: o.port, user: 'strata', database: 'strata', connectionTimeoutMillis: 10_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    throw new EndpointError(`cannot reach the pageserver's page service at ${o.host}:${o.port}: ${(err as Error).message}`, { port: o.port });
  }
  const timer = setTimeout(() => client.end().catch(() => undefined), o.timeoutMs ?? COMMIT_WAIT_MS + 60_000);
  try {
    const stream = client.query(copyTo(`basebackup ${o.tenantId} ${o.timelineId} ${formatLsn(o.lsn)}`));
    let files = 0;
    for await (const entry of readTar(stream, { requireEndMarker: true })) {
      const rel = entry.path.replace(/^\.\//, '');
      if (rel === '' || path.isAbsolute(rel) || rel.split('/').some((p) => p === '..')) {
        throw new EndpointError(`basebackup: refusing tar entry "${entry.path.slice(0, 200)}" (outside the data directory)`);
      }
      if (entry.type === 'directory') {
        await o.sink.directory(rel);
      } else if (entry.type === 'file') {
        await o.sink.file(rel, entry.sizeBytes, async (write) => {
          for await (const chunk of entry.content()) await write(chunk);
        });
        files++;
      } else {
        throw new EndpointError(`basebackup: unexpected ${entry.type} entry "${entry.path.slice(0, 200)}"`);
      }
    }
    await o.sink.finish();
    if (files === 0) throw new EndpointError('basebackup: the page service sent no files');
  } catch (err) {
    if (err instanceof StrataError) throw err;
    throw new EndpointError(`basebackup of timeline ${o.timelineId} at ${formatLsn(o.lsn)} from the page service failed: ${(err as Error).message}`, { timeline: o.timelineId });
  } finally {
    clearTimeout(timer);
    await client.end().catch(() => undefined);
  }
}

/** Fast shutdown (SIGINT; SIGKILL of the group after the timeout). */
export async function stopEndpoint(stateDir: string, name: string, mode: 'fast' | 'immediate' = 'fast'): Promise<'stopped' | 'killed' | 'not running'> {
  const dir = endpointDir(stateDir, name);
  if ((await readEndpointFile(dir)) === null) throw new EndpointError(`no endpoint named "${name}" (see \`strata endpoint list\`)`, { endpoint: name });
  const { pid, stalePid } = await endpointPid(dir);
  if (pid === null) {
    if (stalePid !== null) killGroup(stalePid);
    return 'not running';
  }
  const how = await stopPid(pid, mode === 'fast' ? 'SIGINT' : 'SIGQUIT', STOP_TIMEOUT_MS);
  return how === 'exited' ? 'stopped' : 'killed';
}

/** Removes a stopped endpoint's directory. */
export async function destroyEndpoint(stateDir: string, name: string): Promise<void> {
  const dir = endpointDir(stateDir, name);
  const { pid } = await endpointPid(dir);
  if (pid !== null) throw new EndpointError(`endpoint "${name}" is running; stop it first`, { endpoint: name });
  await rm(dir, { recursive: true, force: true });
}

export function checkPort(text: string): number {
  if (!/^[0-9]{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) throw new InvalidInputError(`--port: expected a port number in 1..65535, got "${text}"`);
  return Number(text);
}
