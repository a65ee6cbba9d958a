/**
 * The safekeeper's per-timeline control file: `<timeline dir>/safekeeper.control`.
 *
 * It holds what a safekeeper must not forget across a crash: the highest term it voted for and the
 * history of accepted terms (so it never votes twice or accepts WAL from a deposed compute), the
 * timeline's identity (system id, segment size), the LSN watermarks (flush, commit, backup,
 * pageserver-durable, peer horizon), the current compute and the set of member safekeepers. WAL bytes themselves live in the segment files
 * (walstorage.ts); `flushLsn` here is only a lower bound that WAL recovery scans forward from.
 *
 * Format (docs/formats.md, "Safekeeper control file and WAL segments"): a small binary envelope
 * around a JSON body —
 *     magic "SKCF" | u32 LE format version | u32 LE body length | body (UTF-8 JSON) | u32 LE CRC-32C
 * The CRC covers every byte before it, so any damaged byte, a torn write or a file cut short is
 * detected; the exact file size is implied by the length field. JSON keeps the file readable with
 * `tail -c +13` and lets fields be added in a later version; 64-bit values are strings (decimal for
 * terms and the system id, PostgreSQL's `X/X` for LSNs) because JSON numbers stop being exact at
 * 2^53.
 *
 * Why this is safe:
 *  - Written with writeFileDurable (temp file, fsync, rename, fsync dir): after a crash the file is
 *    the old or the new version, never a mix. A vote is acknowledged only after the write returns.
 *  - Pair assertions: a state is validated before it is encoded, the encoded bytes are decoded
 *    again and compared with the state before they are written, and a read validates every field
 *    and relation again. A state that fails here is a bug (on write) or damage (on read); Strata
 *    never guesses a timeline's term or LSNs from a damaged file.
 *  - One encoding per state: keys in a fixed order, canonical number text. The reader re-encodes
 *    what it decoded and requires the same bytes, so duplicated keys, reordered or reformatted
 *    JSON, or leading zeros are refused rather than silently interpreted.
 *
 * Relations checked (and the ones deliberately not checked):
 *  - timelineStartLsn ≤ localStartLsn ≤ flushLsn: a safekeeper that joined late starts storing WAL
 *    later than the timeline begins, and recovery scans from flushLsn, which lies in stored WAL.
 *  - termHistory: terms strictly ascending, start LSNs non-decreasing (a term that wrote no WAL
 *    leaves the next term starting at the same LSN), each start ≥ timelineStartLsn, and the last
 *    term ≤ `term` (a term is voted for before it is accepted).
 *  - Alignment: flushLsn, localStartLsn, timelineStartLsn and term start LSNs are record positions,
 *    so they are multiples of 8.
 *  - NOT checked: commitLsn against flushLsn (a safekeeper may learn that WAL is committed on a
 *    quorum before it has flushed that WAL itself), backupLsn, remoteConsistentLsn and
 *    peerHorizonLsn against anything (they are learned from peers, the pageserver and object
 *    storage, and may run ahead of this safekeeper's local WAL).
 */
import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import { crc32c } from '../postgres/crc32c.ts';
import { formatLsn, type Lsn } from '../postgres/lsn.ts';
import { writeFileDurable } from '../util/durable.ts';
import { StrataError, assert } from '../util/errors.ts';
import { isCanonicalId } from '../util/ids.ts';
import type { ComputeSource, TermEntry } from './types.ts';

export const CONTROL_FILE_NAME = 'safekeeper.control';
export const CONTROL_FORMAT_VERSION = 1;
/** "SKCF" */
export const CONTROL_MAGIC = Buffer.from('SKCF', 'latin1');
const HEADER_BYTES = 12; // magic + version + body length
const CRC_BYTES = 4;
/** Limit on the JSON body: generous for a term history of tens of thousands of entries. */
export const CONTROL_MAX_BODY_BYTES = 4 * 1024 * 1024;
export const CONTROL_MAX_TERM_HISTORY = 50_000;
/** PostgreSQL's NAMEDATALEN - 1: the longest slot and application name the server keeps intact. */
const PG_NAME_MAX_BYTES = 63;

const U64_MAX = 0xffff_ffff_ffff_ffffn;

export interface SafekeeperControlState {
  /** Format version of the file this state was read from / will be written as (CONTROL_FORMAT_VERSION). */
  formatVersion: number;
  tenantId: string;
  timelineId: string;
  /** PostgreSQL system identifier of the compute's cluster (pg_control). */
  systemId: bigint;
  /** PG_VERSION_NUM of the compute (150000 … 159999). */
  pgVersion: number;
  walSegSizeBytes: number;
  /** Highest term this safekeeper voted for. */
  term: bigint;
  /** Accepted terms, ascending by term and by start LSN. */
  termHistory: TermEntry[];
  /** Where the timeline's WAL begins. */
  timelineStartLsn: Lsn;
  /** Where this safekeeper's stored WAL begins (≥ timelineStartLsn). */
  localStartLsn: Lsn;
  /** A record boundary whose WAL is known to be fsynced: WAL recovery scans forward from here. */
  flushLsn: Lsn;
  /** WAL below this is committed (flushed on a quorum). May be ahead of flushLsn. */
  commitLsn: Lsn;
  /** WAL below this is in object storage. */
  backupLsn: Lsn;
  /** The pageserver's durable (remote consistent) LSN. */
  remoteConsistentLsn: Lsn;
  /** Every peer safekeeper has WAL up to here. */
  peerHorizonLsn: Lsn;
  /** The current term's compute, or null when none is known. */
  compute: ComputeSource | null;
  /** The safekeepers that hold this timeline (unique ids; empty = a single safekeeper, no peers). */
  members: SafekeeperMember[];
}

/** One safekeeper of the timeline's set. */
export interface SafekeeperMember {
  id: bigint;
  /** host:port of its replication service. */
  pgConnstr: string;
  /** http://host:port of its HTTP API. */
  httpConnstr: string;
}

/** Limit on the member list (a quorum of more than a handful of safekeepers makes no sense). */
export const CONTROL_MAX_MEMBERS = 64;

/** The term of the last accepted term history entry, 0 when there is none. */
export function lastLogTerm(state: Pick<SafekeeperControlState, 'termHistory'>): bigint {
  const last = state.termHistory[state.termHistory.length - 1];
  return last === undefined ? 0n : last.term;
}

export type ControlProblem =
  | 'size'
  | 'magic'
  | 'version'
  | 'length'
  | 'checksum'
  | 'json'
  | 'field'
  | 'relation'
  | 'not_canonical';

/** The control file at `path` is damaged or not ours. */
export class SafekeeperControlError extends StrataError {
  readonly path: string;
  readonly problem: ControlProblem;

  constructor(filePath: string, problem: ControlProblem, detail: string) {
    super('safekeeper_control_corrupt', `safekeeper control file ${filePath} is corrupt: ${detail}`, { path: filePath, problem });
    this.name = 'SafekeeperControlError';
    this.path = filePath;
    this.problem = problem;
  }
}

/** A state handed to the writer violates the format's rules: a bug in the caller. */
export class InvalidControlStateError extends StrataError {
  readonly problem: ControlProblem;

  constructor(filePath: string, problem: ControlProblem, detail: string) {
    super('safekeeper_control_invalid', `refusing to write safekeeper control file ${filePath}: ${detail}`, { path: filePath, problem });
    this.name = 'InvalidControlStateError';
    this.problem = problem;
  }
}

/** A field or relation problem found by `checkState`. */
interface StateProblem {
  problem: 'field' | 'relation';
  detail: string;
}

function isU64(v: unknown): v is bigint {
  return typeof v === 'bigint' && v >= 0n && v <= U64_MAX;
}

function isCleanString(v: unknown, maxBytes: number): v is string {
  return typeof v === 'string' && v.length > 0 && Buffer.byteLength(v, 'utf8') <= maxBytes && !v.includes('\0');
}

const SLOT_NAME = /^[a-z0-9_]{1,63}$/;
const PRINTABLE_ASCII = /^[\x20-\x7e]+$/;

function checkCompute(c: unknown): string | null {
  if (c === null) return null;
  if (typeof c !== 'object') return `compute must be an object or null, got ${typeof c}`;
  const o = c as Record<string, unknown>;
  const keys = Object.keys(o).sort().join(',');
  if (keys !== 'applicationName,host,port,slotName,user') return `compute has fields {${keys}}, expected {applicationName,host,port,slotName,user}`;
  if (!isCleanString(o['host'], 255)) return 'compute.host must be a non-empty string of at most 255 bytes';
  if (typeof o['port'] !== 'number' || !Number.isInteger(o['port']) || o['port'] < 1 || o['port'] > 65535) return `compute.port must be an integer in 1..65535, got ${String(o['port'])}`;
  if (!isCleanString(o['user'], PG_NAME_MAX_BYTES)) return `compute.user must be a non-empty string of at most ${PG_NAME_MAX_BYTES} bytes`;
  if (typeof o['slotName'] !== 'string' || !SLOT_NAME.test(o['slotName'])) {
    return `compute.slotName ${JSON.stringify(o['slotName'])} is not a PostgreSQL replication slot name (1-63 of a-z, 0-9, _)`;
  }
  const app = o['applicationName'];
  if (typeof app !== 'string' || app.length > PG_NAME_MAX_BYTES || !PRINTABLE_ASCII.test(app)) {
    return `compute.applicationName must be 1-${PG_NAME_MAX_BYTES} printable ASCII characters (PostgreSQL mangles anything else, and synchronous_standby_names would no longer match)`;
  }
  return null;
}

const LSN_FIELDS = ['timelineStartLsn', 'localStartLsn', 'flushLsn', 'commitLsn', 'backupLsn', 'remoteConsistentLsn', 'peerHorizonLsn'] as const;
const ALIGNED_LSN_FIELDS = ['timelineStartLsn', 'localStartLsn', 'flushLsn'] as const;

/** Every rule a state must satisfy (types, ranges, relations); null when it is valid. */
function checkState(s: SafekeeperControlState): StateProblem | null {
  const field = (detail: string): StateProblem => ({ problem: 'field', detail });
  const relation = (detail: string): StateProblem => ({ problem: 'relation', detail });
  if (s.formatVersion !== CONTROL_FORMAT_VERSION) return field(`formatVersion ${String(s.formatVersion)} is not ${CONTROL_FORMAT_VERSION}`);
  if (typeof s.tenantId !== 'string' || !isCanonicalId(s.tenantId)) return field(`tenantId ${JSON.stringify(s.tenantId)} is not 32 lower-case hex digits`);
  if (typeof s.timelineId !== 'string' || !isCanonicalId(s.timelineId)) return field(`timelineId ${JSON.stringify(s.timelineId)} is not 32 lower-case hex digits`);
  if (!isU64(s.systemId)) return field(`systemId must be a bigint in [0, 2^64), got ${String(s.systemId)}`);
  if (typeof s.pgVersion !== 'number' || !Number.isInteger(s.pgVersion) || s.pgVersion < 150000 || s.pgVersion > 159999) {
    return field(`pgVersion ${String(s.pgVersion)} is not a PostgreSQL 15 version number (150000 … 159999)`);
  }
  const seg = s.walSegSizeBytes;
  if (typeof seg !== 'number' || !Number.isInteger(seg) || seg < 1024 * 1024 || seg > 1024 * 1024 * 1024 || (seg & (seg - 1)) !== 0) {
    return field(`walSegSizeBytes ${String(seg)} is not a power of two from 1 MiB to 1 GiB`);
  }
  if (!isU64(s.term)) return field(`term must be a bigint in [0, 2^64), got ${String(s.term)}`);
  for (const f of LSN_FIELDS) {
    if (!isU64(s[f])) return field(`${f} must be a bigint LSN in [0, 2^64), got ${String(s[f])}`);
  }
  for (const f of ALIGNED_LSN_FIELDS) {
    if (s[f] % 8n !== 0n) return field(`${f} ${formatLsn(s[f])} is not 8-aligned, so it cannot be a record position`);
  }
  if (!Array.isArray(s.termHistory)) return field('termHistory must be an array');
  if (s.termHistory.length > CONTROL_MAX_TERM_HISTORY) return field(`termHistory has ${s.termHistory.length} entries, more than the limit ${CONTROL_MAX_TERM_HISTORY}`);
  let prev: TermEntry | undefined;
  for (let i = 0; i < s.termHistory.length; i++) {
    const e = s.termHistory[i];
    if (e === null || typeof e !== 'object' || Object.keys(e).sort().join(',') !== 'startLsn,term') return field(`termHistory[${i}] must be {term, startLsn}`);
    if (!isU64(e.term)) return field(`termHistory[${i}].term must be a bigint in [0, 2^64), got ${String(e.term)}`);
    if (!isU64(e.startLsn)) return field(`termHistory[${i}].startLsn must be a bigint LSN, got ${String(e.startLsn)}`);
    if (e.startLsn % 8n !== 0n) return field(`termHistory[${i}].startLsn ${formatLsn(e.startLsn)} is not 8-aligned`);
    if (e.startLsn < s.timelineStartLsn) {
      return relation(`termHistory[${i}] (term ${e.term}) starts at ${formatLsn(e.startLsn)}, before the timeline start ${formatLsn(s.timelineStartLsn)}`);
    }
    if (prev !== undefined) {
      if (e.term <= prev.term) return relation(`termHistory is not ascending by term: entry ${i} has term ${e.term} after term ${prev.term}`);
      if (e.startLsn < prev.startLsn) {
        return relation(`termHistory is not ascending by start LSN: term ${e.term} starts at ${formatLsn(e.startLsn)}, before term ${prev.term} at ${formatLsn(prev.startLsn)}`);
      }
    }
    prev = e;
  }
  if (prev !== undefined && prev.term > s.term) return relation(`last accepted term ${prev.term} is above the voted term ${s.term}`);
  if (s.timelineStartLsn > s.localStartLsn) {
    return relation(`timelineStartLsn ${formatLsn(s.timelineStartLsn)} is above localStartLsn ${formatLsn(s.localStartLsn)}`);
  }
  if (s.localStartLsn > s.flushLsn) return relation(`localStartLsn ${formatLsn(s.localStartLsn)} is above flushLsn ${formatLsn(s.flushLsn)}`);
  const computeProblem = checkCompute(s.compute);
  if (computeProblem !== null) return field(computeProblem);
  if (!Array.isArray(s.members)) return field('members must be an array');
  if (s.members.length > CONTROL_MAX_MEMBERS) return field(`members has ${s.members.length} entries, more than the limit ${CONTROL_MAX_MEMBERS}`);
  const ids = new Set<bigint>();
  for (let i = 0; i < s.members.length; i++) {
    const m = s.members[i];
    if (m === null || typeof m !== 'object' || Object.keys(m).sort().join(',') !== 'httpConnstr,id,pgConnstr') return field(`members[${i}] must be {id, pgConnstr, httpConnstr}`);
    if (!isU64(m.id)) return field(`members[${i}].id must be a bigint in [0, 2^64), got ${String(m.id)}`);
    if (ids.has(m.id)) return field(`members lists safekeeper ${m.id} twice`);
    ids.add(m.id);
    if (!isCleanString(m.pgConnstr, 1024)) return field(`members[${i}].pgConnstr must be a non-empty string of at most 1024 bytes`);
    if (!isCleanString(m.httpConnstr, 1024)) return field(`members[${i}].httpConnstr must be a non-empty string of at most 1024 bytes`);
  }
  return null;
}

/** Throws InvalidControlStateError when `state` cannot be written. */
export function validateControlState(state: SafekeeperControlState, filePath = CONTROL_FILE_NAME): void {
  if (state === null || typeof state !== 'object') throw new InvalidControlStateError(filePath, 'field', 'state must be an object');
  const keys = Object.keys(state).sort();
  const expected = [...STATE_KEYS].sort();
  if (keys.join(',') !== expected.join(',')) {
    throw new InvalidControlStateError(filePath, 'field', `state has fields {${keys.join(',')}}, expected {${expected.join(',')}}`);
  }
  const p = checkState(state);
  if (p !== null) throw new InvalidControlStateError(filePath, p.problem, p.detail);
}

const STATE_KEYS = [
  'formatVersion', 'tenantId', 'timelineId', 'systemId', 'pgVersion', 'walSegSizeBytes', 'term', 'termHistory',
  'timelineStartLsn', 'localStartLsn', 'flushLsn', 'commitLsn', 'backupLsn', 'remoteConsistentLsn', 'peerHorizonLsn', 'compute', 'members',
] as const satisfies readonly (keyof SafekeeperControlState)[];

// ---------------------------------------------------------------------------------------------
// JSON body. Keys are snake_case, in this fixed order; the version lives in the envelope only.

const BODY_KEYS = [
  'tenant_id', 'timeline_id', 'system_id', 'pg_version', 'wal_seg_size', 'term', 'term_history', 'timeline_start_lsn',
  'local_start_lsn', 'flush_lsn', 'commit_lsn', 'backup_lsn', 'remote_consistent_lsn', 'peer_horizon_lsn', 'compute', 'members',
] as const;
const MEMBER_KEYS = ['id', 'pg_connstr', 'http_connstr'] as const;
const COMPUTE_KEYS = ['host', 'port', 'user', 'slot_name', 'application_name'] as const;
const TERM_KEYS = ['term', 'start_lsn'] as const;

function bodyOf(s: SafekeeperControlState): Record<(typeof BODY_KEYS)[number], unknown> {
  return {
    tenant_id: s.tenantId,
    timeline_id: s.timelineId,
    system_id: s.systemId.toString(),
    pg_version: s.pgVersion,
    wal_seg_size: s.walSegSizeBytes,
    term: s.term.toString(),
    term_history: s.termHistory.map((e) => ({ term: e.term.toString(), start_lsn: formatLsn(e.startLsn) })),
    timeline_start_lsn: formatLsn(s.timelineStartLsn),
    local_start_lsn: formatLsn(s.localStartLsn),
    flush_lsn: formatLsn(s.flushLsn),
    commit_lsn: formatLsn(s.commitLsn),
    backup_lsn: formatLsn(s.backupLsn),
    remote_consistent_lsn: formatLsn(s.remoteConsistentLsn),
    peer_horizon_lsn: formatLsn(s.peerHorizonLsn),
    compute: s.compute === null ? null : {
      host: s.compute.host,
      port: s.compute.port,
      user: s.compute.user,
      slot_name: s.compute.slotName,
      application_name: s.compute.applicationName,
    },
    members: s.members.map((m) => ({ id: m.id.toString(), pg_connstr: m.pgConnstr, http_connstr: m.httpConnstr })),
  };
}

/** The file image of `state` (validated first). */
export function encodeControlFile(state: SafekeeperControlState, filePath = CONTROL_FILE_NAME): Buffer {
  validateControlState(state, filePath);
  const body = Buffer.from(JSON.stringify(bodyOf(state)), 'utf8');
  if (body.length > CONTROL_MAX_BODY_BYTES) {
    throw new InvalidControlStateError(filePath, 'size', `encoded body is ${body.length} bytes, more than the limit ${CONTROL_MAX_BODY_BYTES}`);
  }
  const out = Buffer.alloc(HEADER_BYTES + body.length + CRC_BYTES);
  CONTROL_MAGIC.copy(out, 0);
  out.writeUInt32LE(CONTROL_FORMAT_VERSION, 4);
  out.writeUInt32LE(body.length, 8);
  body.copy(out, HEADER_BYTES);
  out.writeUInt32LE(crc32c(out.subarray(0, HEADER_BYTES + body.length)), HEADER_BYTES + body.length);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Decoding

const DECIMAL_U64 = /^(0|[1-9][0-9]{0,19})$/;
const LSN_TEXT = /^([0-9A-F]{1,8})\/([0-9A-F]{1,8})$/;

class FieldError extends Error {}

function exactKeys(o: unknown, keys: readonly string[], where: string): Record<string, unknown> {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new FieldError(`${where} must be a JSON object`);
  const rec = o as Record<string, unknown>;
  for (const k of Object.keys(rec)) if (!keys.includes(k)) throw new FieldError(`unknown field "${k}" in ${where}`);
  for (const k of keys) if (!(k in rec)) throw new FieldError(`missing field "${k}" in ${where}`);
  return rec;
}

function u64Text(v: unknown, name: string): bigint {
  if (typeof v !== 'string' || !DECIMAL_U64.test(v)) throw new FieldError(`${name} must be a decimal string, got ${JSON.stringify(v)}`);
  const n = BigInt(v);
  if (n > U64_MAX) throw new FieldError(`${name} ${v} does not fit in 64 bits`);
  return n;
}

function lsnText(v: unknown, name: string): Lsn {
  const m = typeof v === 'string' ? LSN_TEXT.exec(v) : null;
  if (m === null) throw new FieldError(`${name} must be an LSN as "X/X" (upper-case hex), got ${JSON.stringify(v)}`);
  return (BigInt('0x' + m[1]) << 32n) | BigInt('0x' + m[2]);
}

function safeInt(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw new FieldError(`${name} must be an integer, got ${JSON.stringify(v)}`);
  return v;
}

function str(v: unknown, name: string): string {
  if (typeof v !== 'string') throw new FieldError(`${name} must be a string, got ${JSON.stringify(v)}`);
  return v;
}

function stateFromBody(json: unknown, formatVersion: number): SafekeeperControlState {
  const b = exactKeys(json, BODY_KEYS, 'the body');
  const th = b['term_history'];
  if (!Array.isArray(th)) throw new FieldError('term_history must be an array');
  if (th.length > CONTROL_MAX_TERM_HISTORY) throw new FieldError(`term_history has ${th.length} entries, more than the limit ${CONTROL_MAX_TERM_HISTORY}`);
  const termHistory: TermEntry[] = th.map((e: unknown, i: number) => {
    const o = exactKeys(e, TERM_KEYS, `term_history[${i}]`);
    return { term: u64Text(o['term'], `term_history[${i}].term`), startLsn: lsnText(o['start_lsn'], `term_history[${i}].start_lsn`) };
  });
  const ms = b['members'];
  if (!Array.isArray(ms)) throw new FieldError('members must be an array');
  if (ms.length > CONTROL_MAX_MEMBERS) throw new FieldError(`members has ${ms.length} entries, more than the limit ${CONTROL_MAX_MEMBERS}`);
  const members: SafekeeperMember[] = ms.map((e: unknown, i: number) => {
    const o = exactKeys(e, MEMBER_KEYS, `members[${i}]`);
    return { id: u64Text(o['id'], `members[${i}].id`), pgConnstr: str(o['pg_connstr'], `members[${i}].pg_connstr`), httpConnstr: str(o['http_connstr'], `members[${i}].http_connstr`) };
  });
  let compute: ComputeSource | null = null;
  if (b['compute'] !== null) {
    const c = exactKeys(b['compute'], COMPUTE_KEYS, 'compute');
    compute = {
      host: str(c['host'], 'compute.host'),
      port: safeInt(c['port'], 'compute.port'),
      user: str(c['user'], 'compute.user'),
      slotName: str(c['slot_name'], 'compute.slot_name'),
      applicationName: str(c['application_name'], 'compute.application_name'),
    };
  }
  return {
    formatVersion,
    tenantId: str(b['tenant_id'], 'tenant_id'),
    timelineId: str(b['timeline_id'], 'timeline_id'),
    systemId: u64Text(b['system_id'], 'system_id'),
    pgVersion: safeInt(b['pg_version'], 'pg_version'),
    walSegSizeBytes: safeInt(b['wal_seg_size'], 'wal_seg_size'),
    term: u64Text(b['term'], 'term'),
    termHistory,
    timelineStartLsn: lsnText(b['timeline_start_lsn'], 'timeline_start_lsn'),
    localStartLsn: lsnText(b['local_start_lsn'], 'local_start_lsn'),
    flushLsn: lsnText(b['flush_lsn'], 'flush_lsn'),
    commitLsn: lsnText(b['commit_lsn'], 'commit_lsn'),
    backupLsn: lsnText(b['backup_lsn'], 'backup_lsn'),
    remoteConsistentLsn: lsnText(b['remote_consistent_lsn'], 'remote_consistent_lsn'),
    peerHorizonLsn: lsnText(b['peer_horizon_lsn'], 'peer_horizon_lsn'),
    compute,
    members,
  };
}

/** Decodes and validates a control file image; `filePath` names the file in errors. */
export function decodeControlFile(bytes: Uint8Array, filePath: string): SafekeeperControlState {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < HEADER_BYTES + CRC_BYTES) {
    throw new SafekeeperControlError(filePath, 'size', `file is ${buf.length} bytes, shorter than the ${HEADER_BYTES + CRC_BYTES}-byte envelope`);
  }
  if (!buf.subarray(0, 4).equals(CONTROL_MAGIC)) {
    throw new SafekeeperControlError(filePath, 'magic', `bad magic ${buf.subarray(0, 4).toString('hex')} (expected ${CONTROL_MAGIC.toString('hex')}, "SKCF")`);
  }
  const version = buf.readUInt32LE(4);
  const bodyLen = buf.readUInt32LE(8);
  if (bodyLen > CONTROL_MAX_BODY_BYTES || HEADER_BYTES + bodyLen + CRC_BYTES !== buf.length) {
    throw new SafekeeperControlError(filePath, 'length', `body length field says ${bodyLen} bytes, so the file should be ${HEADER_BYTES + bodyLen + CRC_BYTES} bytes, but it is ${buf.length} (torn or truncated write?)`);
  }
  const stored = buf.readUInt32LE(HEADER_BYTES + bodyLen);
  const actual = crc32c(buf.subarray(0, HEADER_BYTES + bodyLen));
  if (stored !== actual) {
    throw new SafekeeperControlError(filePath, 'checksum', `CRC-32C mismatch (stored 0x${stored.toString(16).padStart(8, '0')}, computed 0x${actual.toString(16).padStart(8, '0')})`);
  }
  // The version is checked after the CRC: a bad version in an intact file is a real format
  // mismatch (a newer Strata wrote it), not damage.
  if (version !== CONTROL_FORMAT_VERSION) {
    throw new SafekeeperControlError(filePath, 'version', `unknown format version ${version} (this build reads version ${CONTROL_FORMAT_VERSION})`);
  }
  const bodyBytes = buf.subarray(HEADER_BYTES, HEADER_BYTES + bodyLen);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bodyBytes));
  } catch (e) {
    throw new SafekeeperControlError(filePath, 'json', `body is not valid UTF-8 JSON: ${(e as Error).message}`);
  }
  let state: SafekeeperControlState;
  try {
    state = stateFromBody(json, version);
  } catch (e) {
    if (e instanceof FieldError) throw new SafekeeperControlError(filePath, 'field', e.message);
    throw e;
  }
  const p = checkState(state);
  if (p !== null) throw new SafekeeperControlError(filePath, p.problem, p.detail);
  const canonical = Buffer.from(JSON.stringify(bodyOf(state)), 'utf8');
  if (!canonical.equals(bodyBytes)) {
    throw new SafekeeperControlError(filePath, 'not_canonical', 'body is not in the canonical encoding (reordered or duplicated keys, extra whitespace, or non-canonical numbers)');
  }
  return state;
}

/** Reads and validates `<dir>/safekeeper.control`. A missing file is a StrataError with code `not_found`. */
export async function readControlFile(dir: string): Promise<SafekeeperControlState> {
  const filePath = path.join(dir, CONTROL_FILE_NAME);
  let sizeBytes: number;
  try {
    sizeBytes = (await stat(filePath)).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new StrataError('not_found', `safekeeper control file ${filePath} does not exist`, { path: filePath });
    }
    throw e;
  }
  const maxBytes = HEADER_BYTES + CONTROL_MAX_BODY_BYTES + CRC_BYTES;
  if (sizeBytes > maxBytes) {
    throw new SafekeeperControlError(filePath, 'size', `file is ${sizeBytes} bytes, more than the largest valid control file (${maxBytes})`);
  }
  const fh = await open(filePath, 'r');
  let bytes: Buffer;
  try {
    // Read what is there (not what stat said): a concurrent replacement is a rename, so this
    // handle keeps seeing one version of the file.
    bytes = Buffer.alloc(maxBytes + 1);
    let got = 0;
    for (let guard = 0; guard < 1_000_000 && got < bytes.length; guard++) {
      const { bytesRead } = await fh.read(bytes, got, bytes.length - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    bytes = bytes.subarray(0, got);
  } finally {
    await fh.close();
  }
  if (bytes.length > maxBytes) {
    throw new SafekeeperControlError(filePath, 'size', `file is more than ${maxBytes} bytes, larger than any valid control file`);
  }
  return decodeControlFile(bytes, filePath);
}

/** Validates `state` and writes `<dir>/safekeeper.control` durably (temp, fsync, rename, fsync dir). */
export async function writeControlFile(dir: string, state: SafekeeperControlState): Promise<void> {
  const filePath = path.join(dir, CONTROL_FILE_NAME);
  const bytes = encodeControlFile(state, filePath);
  // Pair assertion: what we are about to make durable must read back as the state we were given.
  const back = decodeControlFile(bytes, filePath);
  assert(sameState(back, state), 'safekeeper control file does not decode to the state it was encoded from', { path: filePath });
  await writeFileDurable(filePath, bytes);
}

/** Field-by-field equality of two states. */
export function sameState(a: SafekeeperControlState, b: SafekeeperControlState): boolean {
  return Buffer.from(JSON.stringify(bodyOf(a))).equals(Buffer.from(JSON.stringify(bodyOf(b)))) && a.formatVersion === b.formatVersion;
}
