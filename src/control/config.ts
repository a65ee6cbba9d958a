/**
 * The local control plane's state: `<workdir>/config.json` (workdir = `.strata/` of the current
 * directory, or `--workdir DIR`), in the spirit of neon_local's `.neon/config`.
 *
 * What it holds: where every service listens (fixed at `strata init`, so pid files, health checks
 * and endpoints always agree on the ports), the PostgreSQL binaries, the remote storage setting,
 * the default tenant and the branch-name → timeline-id mappings per tenant (the pageserver knows
 * only ids; names are a CLI convenience, as in neon_local's `mappings`).
 *
 * Invariants:
 *   - The file is versioned (`version`) and parsed strictly: an unknown or missing field, a
 *     wrong type, a duplicate port or a malformed id is an error naming the field — a config we do
 *     not fully understand is never half-used.
 *   - It is written durably (temp → fsync → rename → fsync dir): a crash leaves the old or the new
 *     file, never a torn one.
 *   - Read-modify-write (tenant create, branch names) happens under `config.lock` (O_EXCL file
 *     holding the owner's pid; a lock whose owner is gone is taken over), so two CLI commands run
 *     at once cannot lose each other's update. Waiting for the lock is bounded.
 */
import { constants as fsConstants } from 'node:fs';
import { access, chmod, mkdir, open, readFile, stat, unlink } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { writeFileDurable } from '../util/durable.ts';
import { InvalidInputError, StrataError } from '../util/errors.ts';
import { isCanonicalId } from '../util/ids.ts';
import { pgBinDir } from '../postgres/pgbin.ts';
import { freePort } from '../compute/postgresprocess.ts';

export const CONFIG_VERSION = 1;
export const CONFIG_FILE_NAME = 'config.json';
const LOCK_FILE_NAME = 'config.lock';
const MAX_CONFIG_FILE_BYTES = 4 * 1024 * 1024;
export const MAX_SAFEKEEPERS = 15;
const LOCK_WAIT_MS = 15_000;

/** Neon's default ports (neon_local). */
export const DEFAULT_PORTS = {
  pageserverHttp: 9898,
  pageserverPg: 64000,
  safekeeperPg: 5454,
  safekeeperHttp: 7676,
  broker: 50051,
  brokerHttp: 50052,
} as const;

export type RemoteStorage =
  | { kind: 'local'; path: string }
  | { kind: 's3'; bucket: string; prefix: string };

export interface SafekeeperConf {
  id: number;
  listen_pg: string;
  listen_http: string;
}

/** The file's shape, field for field (snake_case, like the rest of Strata's JSON). */
export interface StrataConfig {
  version: typeof CONFIG_VERSION;
  pg_bin: string;
  remote_storage: RemoteStorage | null;
  broker: { listen: string; listen_http: string };
  pageserver: { id: number; listen_http: string; listen_pg: string };
  safekeepers: SafekeeperConf[];
  default_tenant: string | null;
  /** tenant id → branch name → timeline id. */
  branches: Record<string, Record<string, string>>;
}

export class ConfigError extends StrataError {
  constructor(message: string, context: Record<string, string | number> = {}) {
    super('config_invalid', message, context);
    this.name = 'ConfigError';
  }
}

export class NotInitializedError extends StrataError {
  constructor(stateDir: string) {
    super('not_initialized', `no Strata state in ${stateDir} (run \`strata init\` first, or pass --workdir DIR)`, { dir: stateDir });
    this.name = 'NotInitializedError';
  }
}

// ------------------------------------------------------------------------------------- names

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Branch and endpoint names: letters, digits, `_ . -`, at most 63 characters, not starting with a symbol. */
export function checkName(name: string, what: 'branch' | 'endpoint'): string {
  if (!NAME_RE.test(name)) {
    throw new InvalidInputError(`invalid ${what} name "${name.slice(0, 80)}": use letters, digits, '_', '.', '-' (at most 63, starting with a letter or digit)`, { name: name.slice(0, 80) });
  }
  return name;
}

// ------------------------------------------------------------------------------------- paths

/** The state directory: --workdir DIR, else `.strata` in the current directory. */
export function resolveStateDir(workdir: string | undefined, cwd = process.cwd()): string {
  return path.resolve(cwd, workdir ?? '.strata');
}

export function configPath(stateDir: string): string {
  return path.join(stateDir, CONFIG_FILE_NAME);
}

// ------------------------------------------------------------------------------------- host:port

export interface HostPort {
  host: string;
  port: number;
}

export function parseHostPortStrict(text: string, where: string): HostPort {
  const m = typeof text === 'string' ? /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(text) : null;
  const port = m === null ? NaN : Number(m[2]);
  if (m === null || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ConfigError(`${where}: expected host:port with a port in 1..65535, got ${JSON.stringify(text)}`, { field: where });
  }
  return { host: m[1]!, port };
}

export function formatHostPort(hp: HostPort): string {
  return `${hp.host}:${hp.port}`;
}

// ------------------------------------------------------------------------------------- strict parse

type Json = unknown;

function fieldsOf(v: Json, where: string, keys: readonly string[]): Record<string, Json> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError(`${where}: expected an object`, { field: where });
  const o = v as Record<string, Json>;
  for (const k of Object.keys(o)) {
    if (!keys.includes(k)) throw new ConfigError(`${where}: unknown field "${k}" (known: ${keys.join(', ')})`, { field: `${where}.${k}` });
  }
  for (const k of keys) {
    if (!Object.hasOwn(o, k)) throw new ConfigError(`${where}: missing field "${k}"`, { field: `${where}.${k}` });
  }
  return o;
}

function str(v: Json, where: string): string {
  if (typeof v !== 'string' || v.length === 0) throw new ConfigError(`${where}: expected a non-empty string`, { field: where });
  return v;
}

function posInt(v: Json, where: string, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) throw new ConfigError(`${where}: expected an integer in 1..${max}`, { field: where });
  return v;
}

function id(v: Json, where: string): string {
  if (typeof v !== 'string' || !isCanonicalId(v)) throw new ConfigError(`${where}: expected a 32-digit lower-case hex id`, { field: where });
  return v;
}

function parseRemoteStorageJson(v: Json, where: string): RemoteStorage | null {
  if (v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(`${where}: expected null or an object`, { field: where });
  const kind = (v as Record<string, Json>)['kind'];
  if (kind === 'local') {
    const o = fieldsOf(v, where, ['kind', 'path']);
    const p = str(o['path'], `${where}.path`);
    if (!path.isAbsolute(p)) throw new ConfigError(`${where}.path: expected an absolute path`, { field: `${where}.path` });
    return { kind: 'local', path: p };
  }
  if (kind === 's3') {
    const o = fieldsOf(v, where, ['kind', 'bucket', 'prefix']);
    const bucket = str(o['bucket'], `${where}.bucket`);
    if (!S3_BUCKET_RE.test(bucket)) throw new ConfigError(`${where}.bucket: not a valid bucket name`, { field: `${where}.bucket` });
    if (typeof o['prefix'] !== 'string') throw new ConfigError(`${where}.prefix: expected a string`, { field: `${where}.prefix` });
    return { kind: 's3', bucket, prefix: o['prefix'] };
  }
  throw new ConfigError(`${where}.kind: expected "local" or "s3"`, { field: `${where}.kind` });
}

/** Parses config.json text strictly (see the module comment). */
export function parseConfig(text: string, file = CONFIG_FILE_NAME): StrataConfig {
  let raw: Json;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${file}: not valid JSON (${err instanceof Error ? err.message : String(err)})`, { file });
  }
  const o = fieldsOf(raw, file, ['version', 'pg_bin', 'remote_storage', 'broker', 'pageserver', 'safekeepers', 'default_tenant', 'branches']);
  if (o['version'] !== CONFIG_VERSION) {
    throw new ConfigError(`${file}: unsupported version ${JSON.stringify(o['version'])} (this strata reads version ${CONFIG_VERSION})`, { file });
  }
  const pgBin = str(o['pg_bin'], 'pg_bin');
  if (!path.isAbsolute(pgBin)) throw new ConfigError('pg_bin: expected an absolute path', { field: 'pg_bin' });

  const ports = new Map<string, string>();
  const addr = (v: Json, where: string): string => {
    const hp = parseHostPortStrict(str(v, where), where);
    const key = formatHostPort(hp);
    const other = ports.get(String(hp.port));
    if (other !== undefined) throw new ConfigError(`${where}: port ${hp.port} is also used by ${other}`, { field: where });
    ports.set(String(hp.port), where);
    return key;
  };

  const b = fieldsOf(o['broker'], 'broker', ['listen', 'listen_http']);
  const broker = { listen: addr(b['listen'], 'broker.listen'), listen_http: addr(b['listen_http'], 'broker.listen_http') };
  const p = fieldsOf(o['pageserver'], 'pageserver', ['id', 'listen_http', 'listen_pg']);
  const pageserver = {
    id: posInt(p['id'], 'pageserver.id', 1_000_000),
    listen_http: addr(p['listen_http'], 'pageserver.listen_http'),
    listen_pg: addr(p['listen_pg'], 'pageserver.listen_pg'),
  };
  if (!Array.isArray(o['safekeepers']) || o['safekeepers'].length < 1 || o['safekeepers'].length > MAX_SAFEKEEPERS) {
    throw new ConfigError(`safekeepers: expected a list of 1..${MAX_SAFEKEEPERS} safekeepers`, { field: 'safekeepers' });
  }
  const safekeepers = o['safekeepers'].map((s: Json, i: number): SafekeeperConf => {
    const w = `safekeepers[${i}]`;
    const f = fieldsOf(s, w, ['id', 'listen_pg', 'listen_http']);
    const sid = posInt(f['id'], `${w}.id`, 1_000_000);
    if (sid !== i + 1) throw new ConfigError(`${w}.id: expected ${i + 1} (safekeepers are numbered 1..N in order)`, { field: `${w}.id` });
    return { id: sid, listen_pg: addr(f['listen_pg'], `${w}.listen_pg`), listen_http: addr(f['listen_http'], `${w}.listen_http`) };
  });
  const defaultTenant = o['default_tenant'] === null ? null : id(o['default_tenant'], 'default_tenant');

  const bRaw = o['branches'];
  if (typeof bRaw !== 'object' || bRaw === null || Array.isArray(bRaw)) throw new ConfigError('branches: expected an object', { field: 'branches' });
  const branches: Record<string, Record<string, string>> = {};
  for (const [tenant, names] of Object.entries(bRaw as Record<string, Json>)) {
    id(tenant, `branches key "${tenant.slice(0, 40)}"`);
    if (typeof names !== 'object' || names === null || Array.isArray(names)) throw new ConfigError(`branches.${tenant}: expected an object`, { field: `branches.${tenant}` });
    const m: Record<string, string> = {};
    const seen = new Set<string>();
    for (const [name, tl] of Object.entries(names as Record<string, Json>)) {
      if (!NAME_RE.test(name)) throw new ConfigError(`branches.${tenant}: invalid branch name "${name.slice(0, 80)}"`, { field: `branches.${tenant}` });
      const tlId = id(tl, `branches.${tenant}.${name}`);
      if (seen.has(tlId)) throw new ConfigError(`branches.${tenant}.${name}: timeline ${tlId} has two names`, { field: `branches.${tenant}.${name}` });
      seen.add(tlId);
      m[name] = tlId;
    }
    branches[tenant] = m;
  }
  return { version: CONFIG_VERSION, pg_bin: pgBin, remote_storage: parseRemoteStorageJson(o['remote_storage'], 'remote_storage'), broker, pageserver, safekeepers, default_tenant: defaultTenant, branches };
}

export function serializeConfig(c: StrataConfig): string {
  return JSON.stringify(c, null, 2) + '\n';
}

// ------------------------------------------------------------------------------------- load / save

export async function configExists(stateDir: string): Promise<boolean> {
  return stat(configPath(stateDir)).then(() => true, () => false);
}

export async function loadConfig(stateDir: string): Promise<StrataConfig> {
  const file = configPath(stateDir);
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotInitializedError(stateDir);
    throw new ConfigError(`cannot read ${file}: ${(err as Error).message}`, { file });
  }
  try {
    const st = await fh.stat();
    if (st.size > MAX_CONFIG_FILE_BYTES) throw new ConfigError(`${file} is ${st.size} bytes, more than the ${MAX_CONFIG_FILE_BYTES} a config can be`, { file });
    const text = await fh.readFile('utf8');
    try {
      return parseConfig(text, file);
    } catch (err) {
      if (err instanceof ConfigError) throw new ConfigError(`invalid ${file}: ${err.message.startsWith(file) ? err.message.slice(file.length + 2) : err.message}`, { file });
      throw err;
    }
  } finally {
    await fh.close();
  }
}

export async function saveConfig(stateDir: string, c: StrataConfig): Promise<void> {
  // Never write what we could not read back.
  parseConfig(serializeConfig(c));
  await writeFileDurable(configPath(stateDir), Buffer.from(serializeConfig(c)));
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Read-modify-write under the lock: `fn` changes the config in place (and may return a value);
 * the result is saved durably before the lock is released. If `fn` throws, nothing is saved.
 */
export async function mutateConfig<T>(stateDir: string, fn: (c: StrataConfig) => T | Promise<T>): Promise<T> {
  const lock = path.join(stateDir, LOCK_FILE_NAME);
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const fh = await open(lock, 'wx', 0o644);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new ConfigError(`cannot create ${lock}: ${(err as Error).message}`, { file: lock });
      const owner = Number((await readFile(lock, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(owner) && owner > 0 && !pidAlive(owner)) {
        await unlink(lock).catch(() => undefined);
        continue;
      }
      if (Date.now() > deadline) {
        throw new ConfigError(`another strata command (pid ${Number.isInteger(owner) && owner > 0 ? owner : '?'}) holds ${lock}; try again when it is done`, { file: lock });
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    const c = await loadConfig(stateDir);
    const result = await fn(c);
    await saveConfig(stateDir, c);
    return result;
  } finally {
    await unlink(lock).catch(() => undefined);
  }
}

// ------------------------------------------------------------------------------------- init

const S3_BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** `DIR` (absolute after resolving; created if missing) or `s3://bucket[/prefix]`. */
export async function parseRemoteStorage(text: string, cwd = process.cwd()): Promise<RemoteStorage> {
  const s3 = /^s3:\/\/([^/]*)(?:\/(.*))?$/.exec(text);
  if (s3 !== null) {
    const bucket = s3[1]!;
    if (!S3_BUCKET_RE.test(bucket) || bucket.includes('..')) {
      throw new InvalidInputError(`--remote-storage ${text}: "${bucket}" is not a valid S3 bucket name (3-63 characters: lower-case letters, digits, '.', '-')`, { remoteStorage: text });
    }
    const prefix = (s3[2] ?? '').replace(/^\/+|\/+$/g, '');
    return { kind: 's3', bucket, prefix };
  }
  if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(text)) {
    throw new InvalidInputError(`--remote-storage ${text}: unsupported scheme; expected a directory or s3://bucket[/prefix]`, { remoteStorage: text });
  }
  if (text.trim() === '') throw new InvalidInputError('--remote-storage: expected a directory or s3://bucket[/prefix], got an empty value');
  const dir = path.resolve(cwd, text);
  const st = await stat(dir).catch(() => null);
  if (st !== null && !st.isDirectory()) throw new InvalidInputError(`--remote-storage ${text}: ${dir} exists and is not a directory`, { remoteStorage: text });
  if (st === null) {
    try {
      await mkdir(dir, { recursive: true });
    } catch (err) {
      throw new InvalidInputError(`--remote-storage ${text}: cannot create ${dir}: ${(err as Error).message}`, { remoteStorage: text });
    }
  }
  return { kind: 'local', path: dir };
}

export function describeRemoteStorage(rs: RemoteStorage | null): string {
  if (rs === null) return 'none';
  return rs.kind === 'local' ? rs.path : `s3://${rs.bucket}${rs.prefix !== '' ? '/' + rs.prefix : ''}`;
}

/** Checks that DIR holds PostgreSQL 15's programs; returns the absolute path. */
export async function checkPgBin(dir: string): Promise<string> {
  const abs = path.resolve(dir);
  for (const prog of ['postgres', 'initdb', 'psql']) {
    try {
      await access(path.join(abs, prog), fsConstants.X_OK);
    } catch {
      throw new InvalidInputError(`PostgreSQL 15 binaries not found: ${path.join(abs, prog)} is missing or not executable (install postgresql-15, or pass --pg-bin DIR / set STRATA_PG_BIN)`, { pgBin: abs });
    }
  }
  let version = '';
  try {
    version = execFileSync(path.join(abs, 'postgres'), ['--version'], { encoding: 'utf8', timeout: 10_000 }).trim();
  } catch (err) {
    throw new InvalidInputError(`${path.join(abs, 'postgres')} --version failed: ${(err as Error).message.split('\n')[0]}`, { pgBin: abs });
  }
  if (!/\(PostgreSQL\) 15[.\s]/.test(version + ' ')) {
    throw new InvalidInputError(`${path.join(abs, 'postgres')} is "${version}", Strata needs PostgreSQL 15`, { pgBin: abs });
  }
  return abs;
}

export interface InitOptions {
  safekeepers: number;
  remoteStorage: RemoteStorage | null;
  pgBin: string;
  /** Pick free ports on 127.0.0.1 instead of Neon's defaults. */
  freePorts: boolean;
}

/** Distinct free ports on 127.0.0.1 (bind :0; a race with other programs is possible until the services bind them). */
export async function freePorts(n: number): Promise<number[]> {
  const out = new Set<number>();
  for (let tries = 0; out.size < n; tries++) {
    if (tries > n * 20) throw new StrataError('no_free_ports', `could not find ${n} distinct free ports on 127.0.0.1`);
    out.add(await freePort());
  }
  return [...out];
}

export async function buildConfig(opts: InitOptions): Promise<StrataConfig> {
  if (!Number.isInteger(opts.safekeepers) || opts.safekeepers < 1 || opts.safekeepers > MAX_SAFEKEEPERS) {
    throw new InvalidInputError(`--safekeepers must be an integer in 1..${MAX_SAFEKEEPERS}, got ${opts.safekeepers}`);
  }
  const n = opts.safekeepers;
  const h = '127.0.0.1';
  let ports: number[];
  if (opts.freePorts) {
    ports = await freePorts(4 + 2 * n);
  } else {
    ports = [DEFAULT_PORTS.broker, DEFAULT_PORTS.brokerHttp, DEFAULT_PORTS.pageserverHttp, DEFAULT_PORTS.pageserverPg];
    for (let i = 0; i < n; i++) ports.push(DEFAULT_PORTS.safekeeperPg + i, DEFAULT_PORTS.safekeeperHttp + i);
  }
  const at = (i: number): string => `${h}:${ports[i]!}`;
  const c: StrataConfig = {
    version: CONFIG_VERSION,
    pg_bin: opts.pgBin,
    remote_storage: opts.remoteStorage,
    broker: { listen: at(0), listen_http: at(1) },
    pageserver: { id: 1, listen_http: at(2), listen_pg: at(3) },
    safekeepers: Array.from({ length: n }, (_, i) => ({ id: i + 1, listen_pg: at(4 + 2 * i), listen_http: at(5 + 2 * i) })),
    default_tenant: null,
    branches: {},
  };
  return parseConfig(serializeConfig(c));
}

/**
 * Creates the state directory and writes the config; refuses when one exists. The directory is
 * mode 0755: as root, PostgreSQL runs as the postgres OS user and must traverse into endpoints/.
 */
export async function initState(stateDir: string, c: StrataConfig): Promise<void> {
  if (await configExists(stateDir)) {
    throw new StrataError('already_initialized', `${configPath(stateDir)} already exists (Strata is initialised there; remove ${stateDir} to start over)`, { dir: stateDir });
  }
  await mkdir(stateDir, { recursive: true, mode: 0o755 });
  await chmod(stateDir, 0o755);
  await saveConfig(stateDir, c);
}

export function defaultPgBin(): string {
  return pgBinDir();
}
