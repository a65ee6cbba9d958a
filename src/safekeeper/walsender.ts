/**
 * The safekeeper's walsender: serves a timeline's WAL over PostgreSQL's physical replication
 * protocol, so that pageservers and any standard replication client (pg_receivewal, a vanilla
 * PostgreSQL 15 hot standby's walreceiver) can stream from a safekeeper as they would from a primary.
 *
 * Connection. Tenant and timeline come from the `options` startup parameter, in any of the forms
 * `-c tenant_id=X -c timeline_id=Y`, Neon's `-c timeline_id=Y tenant_id=X` (several pairs after one
 * -c), `-ctenant_id=X` or `--tenant_id=X`. They are checked before the session starts (a missing or
 * malformed id, or `replication=database`, is a FATAL naming the fix), after the configured
 * authenticator has accepted the client. The timeline itself is looked up per command, so an error
 * about an unknown timeline is an ordinary ERROR and the session stays usable.
 *
 * Commands (simple query protocol; keywords case-insensitive, a trailing `;` allowed):
 * IDENTIFY_SYSTEM, SHOW wal_segment_size | data_directory_mode | server_version,
 * READ_REPLICATION_SLOT (we keep no slots: PostgreSQL's all-NULL row for an unknown slot),
 * TIMELINE_HISTORY (error: only timeline 1 exists and it has no history file) and
 * START_REPLICATION [SLOT s] [PHYSICAL] X/X [TIMELINE 1] [(term='N')]. Result columns, types and
 * error texts follow PostgreSQL 15's walsender where a client could depend on them.
 *
 * Streaming runs two loops over one CopyBoth:
 *  - the sender reads WAL from the timeline and sends XLogData ('w') of at most maxMessageBytes;
 *    when caught up it waits on the timeline's commit LSN (waitForCommit, at most one keepalive
 *    interval at a time) and sends keepalives ('k', walEnd = commit LSN) every keepaliveIntervalMs,
 *    asking for a reply when the client has been silent for two intervals;
 *  - the receiver consumes the client's CopyData: 'r' standby status updates and 'z' pageserver
 *    feedback go to the timeline, 'h' hot-standby feedback is accepted and ignored (a safekeeper has
 *    no xmin to hold back), anything else ends the stream with an error. A client CopyDone is
 *    answered with CopyDone and CommandComplete "START_STREAMING", as PostgreSQL does.
 *
 * Invariants, and why:
 *  - Never past the commit LSN. WAL above it may still be truncated by a new term's election; a
 *    pageserver that ingested it would diverge from the timeline. Each XLogData is cut at the commit
 *    LSN read just before the read, and the commit LSN never moves back.
 *  - No gaps and no repeats: the first XLogData starts at the requested LSN and each next one where
 *    the previous ended; a timeline read that returns more than asked is a bug and ends the stream.
 *  - Bounded buffering: one message at a time is built, and the sender awaits the socket's drain
 *    after each write, so a slow client slows us instead of growing memory. Client input is bounded
 *    by the pgwire server's buffered-input limit.
 *  - Prompt stop: connection close or server close aborts the query's AbortSignal, which ends every
 *    wait (commit wait, retry sleep, drain) of both loops.
 */
import { formatLsn, type Lsn } from '../postgres/lsn.ts';
import { PgType } from '../postgres/pgwire/codec.ts';
import { startPgWireServer, trustAuthenticator } from '../postgres/pgwire/server.ts';
import type { Authenticator, CopyBothStream, PgWireServer, QueryContext, StartupParams } from '../postgres/pgwire/server.ts';
import { pgTimestampNowUs } from '../postgres/replication.ts';
import { walSegmentFileName } from '../postgres/walformat.ts';
import { AssertionFailedError, StrataError } from '../util/errors.ts';
import type { ErrorContext } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';
import { decodePageserverFeedback, PAGESERVER_FEEDBACK_TAG } from './feedback.ts';
import type { PageserverFeedback, StandbyReply, WalSenderTimeline } from './types.ts';

// ---------------------------------------------------------------------------------------------
// Public types

export interface WalSenderOptions {
  host: string;
  /** 0 = the kernel chooses; read the bound port from the server's `port`. */
  port: number;
  /** Throws (e.g. a StrataError with code 'timeline_not_found') when the timeline is unknown. */
  lookup(tenantId: string, timelineId: string): WalSenderTimeline;
  /** Keepalive period while caught up. Default 1000 ms. */
  keepaliveIntervalMs?: number;
  /** WAL bytes per XLogData message. Default 128 KiB (PostgreSQL's MAX_SEND_SIZE). */
  maxMessageBytes?: number;
  log: Logger;
  /** Default: trust. */
  authenticate?: Authenticator;
  /** Sessions at most; default 100. */
  maxConnections?: number;
}

/** Counters for metrics (monotonic except activeStreams). */
export interface WalSenderStats {
  activeStreams: number;
  streamsStarted: number;
  /** WAL payload bytes sent in XLogData messages. */
  walBytesSent: number;
  xlogDataMessages: number;
  keepalivesSent: number;
  standbyReplies: number;
  pageserverFeedbacks: number;
  hotStandbyFeedbacks: number;
  /** Streams that ended with an error (not a client CopyDone or a closed connection). */
  streamErrors: number;
}

export interface ReplicationStartup {
  tenantId: string;
  timelineId: string;
  /** 'physical' for replication=true/on/yes/1; 'none' without the parameter (or false). */
  replication: 'physical' | 'none';
}

/** An error reported to the client with a PostgreSQL SQLSTATE. */
export class WalSenderError extends StrataError {
  readonly sqlState: string;
  readonly hint: string | undefined;

  constructor(code: string, sqlState: string, message: string, context: ErrorContext = {}, extra: { hint?: string; cause?: unknown } = {}) {
    super(code, message, context, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = 'WalSenderError';
    this.sqlState = sqlState;
    this.hint = extra.hint;
  }
}

// ---------------------------------------------------------------------------------------------
// Constants

const KIB = 1024;
const DEFAULT_KEEPALIVE_INTERVAL_MS = 1_000;
const DEFAULT_MAX_MESSAGE_BYTES = 128 * KIB;
const MAX_MESSAGE_BYTES_LIMIT = 64 * 1024 * KIB;
/** What we report as server_version (ParameterStatus and SHOW); libpq reads 150000 from it. */
export const WALSENDER_SERVER_VERSION = '15.0 (Strata safekeeper)';
/** Client messages are tiny ('r' 34 bytes, 'z' a few hundred); anything far larger is malformed. */
const MAX_CLIENT_COPY_DATA_BYTES = 64 * KIB;
/** The keepalive asks for a reply once the client has been silent this many intervals. */
const REPLY_REQUEST_AFTER_INTERVALS = 2;
/** Back-off when the timeline returns no bytes below its commit LSN (should not happen; never spin). */
const EMPTY_READ_RETRY_MIN_MS = 5;
const EMPTY_READ_RETRY_MAX_MS = 200;

const MSG_XLOG_DATA = 0x77; // 'w'
const MSG_KEEPALIVE = 0x6b; // 'k'
const MSG_STANDBY_REPLY = 0x72; // 'r'
const MSG_HOT_STANDBY_FEEDBACK = 0x68; // 'h'
const XLOG_DATA_HEADER_BYTES = 1 + 8 + 8 + 8;
const KEEPALIVE_BYTES = 1 + 8 + 8 + 1;
const STANDBY_REPLY_BYTES = 1 + 8 + 8 + 8 + 8 + 1;
/** 'h' is 1 + 8 (time) + 4 + 4 since 9.x and + 4 + 4 (catalog xmin/epoch) since PostgreSQL 10. */
const HOT_STANDBY_FEEDBACK_MIN_BYTES = 1 + 8 + 4 + 4;
const HOT_STANDBY_FEEDBACK_MAX_BYTES = 1 + 8 + 4 + 4 + 4 + 4;

const SQLSTATE = {
  syntaxError: '42601',
  undefinedObject: '42704',
  undefinedFile: '58P01',
  featureNotSupported: '0A000',
  invalidParameterValue: '22023',
  protocolViolation: '08P01',
  internal: 'XX000',
} as const;

const ID_HEX = /^[0-9a-fA-F]{32}$/;
const OPTIONS_HINT = "pass both in the options startup parameter, e.g. options='-c tenant_id=<32 hex digits> -c timeline_id=<32 hex digits>'";

// ---------------------------------------------------------------------------------------------
// Startup parameters

/** Splits an `options` value the way PostgreSQL does: on whitespace, a backslash escapes the next character. */
function splitOptions(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inToken = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (ch === '\\' && i + 1 < text.length) {
      cur += text[++i]!;
      inToken = true;
    } else if (/\s/.test(ch)) {
      if (inToken) out.push(cur);
      cur = '';
      inToken = false;
    } else {
      cur += ch;
      inToken = true;
    }
  }
  if (inToken) out.push(cur);
  return out;
}

function startupError(sqlState: string, message: string, context: ErrorContext = {}, hint?: string): WalSenderError {
  return new WalSenderError('walsender_bad_startup', sqlState, message, context, hint === undefined ? {} : { hint });
}

/**
 * Reads tenant_id, timeline_id and the replication mode from startup parameters. Throws a
 * WalSenderError (reported as FATAL at connection time) naming what is wrong and how to fix it.
 */
export function parseReplicationStartup(params: StartupParams): ReplicationStartup {
  const ids: { tenant_id?: string; timeline_id?: string } = {};
  const options = params['options'] ?? '';
  const tokens = splitOptions(options);
  let inSettingGroup = false;
  for (let i = 0; i < tokens.length; i++) {
    const tok = tokens[i]!;
    let pair: string;
    if (tok === '-c') {
      const next = tokens[i + 1];
      if (next === undefined) throw startupError(SQLSTATE.syntaxError, `the options startup parameter ends with "-c" and no name=value after it; ${OPTIONS_HINT}`, { options });
      pair = next;
      i++;
      inSettingGroup = true;
    } else if (tok.startsWith('-c')) {
      pair = tok.slice(2);
      inSettingGroup = true;
    } else if (tok.startsWith('--')) {
      pair = tok.slice(2);
      inSettingGroup = false;
    } else if (inSettingGroup && tok.includes('=') && !tok.startsWith('-')) {
      pair = tok; // Neon's form: several name=value pairs after one -c
    } else {
      throw startupError(SQLSTATE.syntaxError, `invalid token "${tok}" in the options startup parameter: expected -c name=value or --name=value; ${OPTIONS_HINT}`, { options });
    }
    const eq = pair.indexOf('=');
    if (eq <= 0) throw startupError(SQLSTATE.syntaxError, `"${pair}" in the options startup parameter is not name=value; ${OPTIONS_HINT}`, { options });
    const name = pair.slice(0, eq).replace(/-/g, '_').toLowerCase();
    const value = pair.slice(eq + 1);
    if (name !== 'tenant_id' && name !== 'timeline_id') continue; // other settings (application_name, availability_zone, ...) are not ours
    if (!ID_HEX.test(value)) {
      throw startupError(SQLSTATE.invalidParameterValue, `invalid ${name} "${value}" in the options startup parameter: expected 32 hexadecimal digits`, { [name]: value }, OPTIONS_HINT);
    }
    const v = value.toLowerCase();
    const prev = ids[name];
    if (prev !== undefined && prev !== v) {
      throw startupError(SQLSTATE.invalidParameterValue, `${name} is given twice with different values (${prev}, ${v}) in the options startup parameter`, { [name]: v });
    }
    ids[name] = v;
  }
  const missing = (['tenant_id', 'timeline_id'] as const).filter((n) => ids[n] === undefined);
  if (missing.length > 0) {
    throw startupError(SQLSTATE.invalidParameterValue,
      `missing ${missing.join(' and ')}: this safekeeper serves WAL per tenant and timeline; ${OPTIONS_HINT}`,
      { options }, "with psql: psql \"host=... port=... replication=true options='-c tenant_id=... -c timeline_id=...'\"");
  }
  return { tenantId: ids.tenant_id!, timelineId: ids.timeline_id!, replication: parseReplicationParam(params['replication']) };
}

function parseReplicationParam(value: string | undefined): 'physical' | 'none' {
  if (value === undefined) return 'none';
  const v = value.trim().toLowerCase();
  if (['true', 'on', 'yes', '1', 't', 'y'].includes(v)) return 'physical';
  if (['false', 'off', 'no', '0', 'f', 'n'].includes(v)) return 'none';
  if (v === 'database') {
    throw startupError(SQLSTATE.featureNotSupported, 'logical replication (replication=database) is not supported by the safekeeper walsender; connect with replication=true for physical replication');
  }
  throw startupError(SQLSTATE.invalidParameterValue, `invalid value for parameter "replication": "${value}"; use replication=true`, { replication: value });
}

// ---------------------------------------------------------------------------------------------
// Command parsing

type Token =
  | { kind: 'word'; text: string }
  | { kind: 'ident'; text: string } // double-quoted identifier
  | { kind: 'string'; text: string } // single-quoted literal
  | { kind: 'punct'; text: string };

function syntaxError(message: string, query: string): WalSenderError {
  return new WalSenderError('walsender_syntax_error', SQLSTATE.syntaxError, message, { query: query.slice(0, 200) });
}

const MAX_TOKENS = 64;

function tokenize(query: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  const n = query.length;
  while (i < n) {
    if (out.length > MAX_TOKENS) throw syntaxError(`syntax error: replication command has more than ${MAX_TOKENS} tokens`, query);
    const ch = query[i]!;
    if (/\s/.test(ch)) {
      i++;
    } else if (ch === '"' || ch === "'") {
      let text = '';
      let j = i + 1;
      for (;;) {
        if (j >= n) throw syntaxError(`syntax error: unterminated ${ch === '"' ? 'quoted identifier' : 'quoted string'}`, query);
        if (query[j] === ch) {
          if (query[j + 1] === ch) {
            text += ch;
            j += 2;
            continue;
          }
          break;
        }
        text += query[j]!;
        j++;
      }
      out.push({ kind: ch === '"' ? 'ident' : 'string', text });
      i = j + 1;
    } else if ('(),=;'.includes(ch)) {
      out.push({ kind: 'punct', text: ch });
      i++;
    } else {
      let j = i;
      while (j < n && !/\s/.test(query[j]!) && !'"\'(),=;'.includes(query[j]!)) j++;
      out.push({ kind: 'word', text: query.slice(i, j) });
      i = j;
    }
  }
  // A single trailing semicolon is allowed.
  const last = out[out.length - 1];
  if (last !== undefined && last.kind === 'punct' && last.text === ';') out.pop();
  return out;
}

function isKeyword(tok: Token | undefined, kw: string): boolean {
  return tok !== undefined && tok.kind === 'word' && tok.text.toUpperCase() === kw;
}

/** An identifier as PostgreSQL reads it: unquoted ones are folded to lower case. */
function identifier(tok: Token | undefined, what: string, query: string): string {
  if (tok === undefined) throw syntaxError(`syntax error: ${what} expected at end of command`, query);
  if (tok.kind === 'ident') {
    if (tok.text === '') throw syntaxError(`syntax error: zero-length quoted ${what}`, query);
    return tok.text;
  }
  if (tok.kind === 'word' && /^[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*$/.test(tok.text)) return tok.text.toLowerCase();
  throw syntaxError(`syntax error: ${what} expected, got "${tok.text}"`, query);
}

const LSN_TEXT = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

function parseLsnToken(tok: Token | undefined, query: string): Lsn {
  if (tok === undefined) throw syntaxError('syntax error: START_REPLICATION needs a start LSN (X/X), e.g. START_REPLICATION PHYSICAL 0/16B3748', query);
  const m = tok.kind === 'word' ? LSN_TEXT.exec(tok.text) : null;
  if (m === null) {
    throw syntaxError(`invalid start LSN "${tok.text}" in START_REPLICATION: expected two hexadecimal numbers of at most 8 digits separated by "/", e.g. 0/16B3748`, query);
  }
  return (BigInt('0x' + m[1]) << 32n) | BigInt('0x' + m[2]);
}

function parseUint32Token(tok: Token | undefined, what: string, query: string): number {
  if (tok === undefined || tok.kind !== 'word' || !/^[0-9]{1,10}$/.test(tok.text) || Number(tok.text) > 0xffff_ffff) {
    throw syntaxError(`syntax error: ${what} must be an unsigned 32-bit integer${tok === undefined ? '' : `, got "${tok.text}"`}`, query);
  }
  return Number(tok.text);
}

export type ReplicationCommand =
  | { kind: 'identify' }
  | { kind: 'show'; name: string }
  | { kind: 'readSlot'; slot: string }
  | { kind: 'timelineHistory'; timeline: number }
  | { kind: 'start'; slot: string | null; startLsn: Lsn; timeline: number | null; term: bigint | null }
  | { kind: 'unsupported'; command: string };

const KNOWN_COMMANDS = 'IDENTIFY_SYSTEM, SHOW, READ_REPLICATION_SLOT, TIMELINE_HISTORY, START_REPLICATION';

function expectEnd(tokens: Token[], at: number, command: string, query: string): void {
  const extra = tokens[at];
  if (extra !== undefined) throw syntaxError(`syntax error at "${extra.text}": unexpected text after ${command}`, query);
}

/** Parses one replication command. Throws WalSenderError (42601) for anything malformed or unknown. */
export function parseReplicationCommand(query: string): ReplicationCommand {
  const tokens = tokenize(query);
  const first = tokens[0];
  if (first === undefined) throw syntaxError('syntax error: empty replication command', query);
  const kw = first.kind === 'word' ? first.text.toUpperCase() : '';
  switch (kw) {
    case 'IDENTIFY_SYSTEM':
      expectEnd(tokens, 1, 'IDENTIFY_SYSTEM', query);
      return { kind: 'identify' };
    case 'SHOW': {
      // var_name: IDENT ('.' IDENT)*, as in PostgreSQL's replication grammar; unquoted parts fold to lower case.
      const tok = tokens[1];
      let name: string;
      if (tok?.kind === 'word' && /^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)*$/.test(tok.text)) name = tok.text.toLowerCase();
      else name = identifier(tok, 'configuration parameter name', query);
      expectEnd(tokens, 2, 'SHOW', query);
      return { kind: 'show', name };
    }
    case 'READ_REPLICATION_SLOT': {
      const slot = identifier(tokens[1], 'replication slot name', query);
      expectEnd(tokens, 2, 'READ_REPLICATION_SLOT', query);
      return { kind: 'readSlot', slot };
    }
    case 'TIMELINE_HISTORY': {
      const timeline = parseUint32Token(tokens[1], 'TIMELINE_HISTORY timeline', query);
      if (timeline === 0) throw syntaxError('invalid timeline 0', query);
      expectEnd(tokens, 2, 'TIMELINE_HISTORY', query);
      return { kind: 'timelineHistory', timeline };
    }
    case 'START_REPLICATION':
      return parseStartReplication(tokens, query);
    case 'CREATE_REPLICATION_SLOT':
    case 'DROP_REPLICATION_SLOT':
    case 'BASE_BACKUP':
      return { kind: 'unsupported', command: kw };
    default:
      throw syntaxError(`syntax error: unknown replication command "${first.text.slice(0, 60)}"; the safekeeper walsender accepts ${KNOWN_COMMANDS}`, query);
  }
}

function parseStartReplication(tokens: Token[], query: string): ReplicationCommand {
  let at = 1;
  let slot: string | null = null;
  if (isKeyword(tokens[at], 'SLOT')) {
    slot = identifier(tokens[at + 1], 'replication slot name', query);
    at += 2;
  }
  if (isKeyword(tokens[at], 'LOGICAL')) {
    throw new WalSenderError('walsender_logical_unsupported', SQLSTATE.featureNotSupported, 'logical replication is not supported by the safekeeper walsender; use START_REPLICATION [PHYSICAL] X/X', {});
  }
  if (isKeyword(tokens[at], 'PHYSICAL')) at++;
  const startLsn = parseLsnToken(tokens[at], query);
  at++;
  let timeline: number | null = null;
  if (isKeyword(tokens[at], 'TIMELINE')) {
    timeline = parseUint32Token(tokens[at + 1], 'TIMELINE', query);
    if (timeline === 0) throw syntaxError('invalid timeline 0', query);
    at += 2;
  }
  let term: bigint | null = null;
  if (tokens[at]?.kind === 'punct' && tokens[at]!.text === '(') {
    // Neon's option list: (term='N'). Only `term` is known; its value is not needed to serve WAL.
    at++;
    for (let k = 0; k < 8; k++) {
      const name = identifier(tokens[at], 'START_REPLICATION option name', query);
      at++;
      if (tokens[at]?.kind === 'punct' && tokens[at]!.text === '=') at++;
      const val = tokens[at];
      if (val === undefined || (val.kind !== 'string' && val.kind !== 'word')) throw syntaxError(`syntax error: value expected for START_REPLICATION option ${name}`, query);
      at++;
      if (name !== 'term') throw syntaxError(`unrecognized START_REPLICATION option "${name}" (only term is accepted)`, query);
      if (!/^[0-9]{1,20}$/.test(val.text) || BigInt(val.text) > 0xffff_ffff_ffff_ffffn) throw syntaxError(`invalid term "${val.text}": expected an unsigned 64-bit integer`, query);
      term = BigInt(val.text);
      const sep = tokens[at];
      at++;
      if (sep?.kind === 'punct' && sep.text === ')') break;
      if (sep?.kind !== 'punct' || sep.text !== ',') throw syntaxError('syntax error: "," or ")" expected in the START_REPLICATION option list', query);
    }
  }
  expectEnd(tokens, at, 'START_REPLICATION', query);
  return { kind: 'start', slot, startLsn, timeline, term };
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/** PostgreSQL's text form of a byte-sized setting (GUC_UNIT_BYTE): the largest unit that divides it. */
export function formatSizeSetting(bytes: number): string {
  const units: [string, number][] = [['TB', KIB ** 4], ['GB', KIB ** 3], ['MB', KIB ** 2], ['kB', KIB]];
  for (const [unit, size] of units) {
    if (bytes !== 0 && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}B`;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason as unknown);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason as unknown);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function encodeKeepalive(walEnd: Lsn, replyRequested: boolean): Buffer {
  const b = Buffer.allocUnsafe(KEEPALIVE_BYTES);
  b[0] = MSG_KEEPALIVE;
  b.writeBigUInt64BE(walEnd, 1);
  b.writeBigInt64BE(pgTimestampNowUs(), 9);
  b[17] = replyRequested ? 1 : 0;
  return b;
}

function decodeStandbyReply(payload: Buffer): StandbyReply {
  if (payload.length !== STANDBY_REPLY_BYTES) {
    throw new WalSenderError('walsender_bad_client_message', SQLSTATE.protocolViolation,
      `malformed standby status update ('r'): ${payload.length} bytes, expected ${STANDBY_REPLY_BYTES}`, { bytes: payload.length });
  }
  return {
    writeLsn: payload.readBigUInt64BE(1),
    flushLsn: payload.readBigUInt64BE(9),
    applyLsn: payload.readBigUInt64BE(17),
    replyTimeUs: payload.readBigInt64BE(25),
    replyRequested: payload[33] !== 0,
  };
}

function decodeFeedback(payload: Buffer): PageserverFeedback {
  try {
    return decodePageserverFeedback(payload);
  } catch (err) {
    throw new WalSenderError('walsender_bad_client_message', SQLSTATE.protocolViolation,
      `malformed pageserver feedback ('z'): ${err instanceof Error ? err.message : String(err)}`, { bytes: payload.length }, { cause: err });
  }
}

function positiveIntOption(name: string, v: number | undefined, dflt: number, max: number): number {
  const x = v ?? dflt;
  if (!Number.isSafeInteger(x) || x <= 0 || x > max) {
    throw new StrataError('invalid_input', `walsender option ${name} must be an integer in [1, ${max}], got ${String(v)}`, { option: name });
  }
  return x;
}

// ---------------------------------------------------------------------------------------------
// Server

export class WalSenderServer {
  readonly stats: WalSenderStats = {
    activeStreams: 0,
    streamsStarted: 0,
    walBytesSent: 0,
    xlogDataMessages: 0,
    keepalivesSent: 0,
    standbyReplies: 0,
    pageserverFeedbacks: 0,
    hotStandbyFeedbacks: 0,
    streamErrors: 0,
  };

  readonly #lookup: (tenantId: string, timelineId: string) => WalSenderTimeline;
  readonly #keepaliveIntervalMs: number;
  readonly #maxMessageBytes: number;
  readonly #log: Logger;
  readonly #opts: WalSenderOptions;
  #server: PgWireServer | null = null;

  constructor(opts: WalSenderOptions) {
    this.#opts = opts;
    this.#lookup = opts.lookup;
    this.#keepaliveIntervalMs = positiveIntOption('keepaliveIntervalMs', opts.keepaliveIntervalMs, DEFAULT_KEEPALIVE_INTERVAL_MS, 3_600_000);
    this.#maxMessageBytes = positiveIntOption('maxMessageBytes', opts.maxMessageBytes, DEFAULT_MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES_LIMIT);
    this.#log = opts.log.child({ component: 'walsender' });
  }

  /** Starts listening (startWalSender() does this). */
  async listen(): Promise<void> {
    if (this.#server !== null) return;
    const opts = this.#opts;
    const userAuth = opts.authenticate ?? trustAuthenticator;
    this.#server = await startPgWireServer({
      host: opts.host,
      port: opts.port,
      onQuery: (query, ctx) => this.#onQuery(query, ctx),
      // Authentication first (do not reveal anything to an unauthenticated client), then the
      // tenant/timeline/replication parameters: a missing id is a FATAL at connect time.
      authenticate: async (exchange) => {
        await userAuth(exchange);
        parseReplicationStartup(exchange.params);
      },
      ...(opts.maxConnections !== undefined ? { maxConnections: opts.maxConnections } : {}),
      maxCopyDataBytes: MAX_CLIENT_COPY_DATA_BYTES,
      serverParameters: { server_version: WALSENDER_SERVER_VERSION },
      logger: this.#log,
    });
  }

  get port(): number {
    return this.#server?.port ?? 0;
  }

  /** Open client sockets (including ones still starting up). */
  get connections(): number {
    return this.#server?.connectionCount ?? 0;
  }

  get activeStreams(): number {
    return this.stats.activeStreams;
  }

  get bytesSent(): number {
    return this.stats.walBytesSent;
  }

  /** Stops listening and ends every connection (streams stop through their AbortSignal). Idempotent. */
  async close(): Promise<void> {
    await this.#server?.close();
  }

  #timeline(startup: ReplicationStartup): WalSenderTimeline {
    try {
      return this.#lookup(startup.tenantId, startup.timelineId);
    } catch (err) {
      if (typeof (err as { sqlState?: unknown } | null)?.sqlState === 'string') throw err;
      if (err instanceof StrataError) {
        const state = err.code === 'timeline_not_found' ? SQLSTATE.undefinedObject : SQLSTATE.internal;
        throw new WalSenderError(err.code, state, err.message, { tenant_id: startup.tenantId, timeline_id: startup.timelineId, ...err.context }, { cause: err });
      }
      throw err;
    }
  }

  async #onQuery(query: string, ctx: QueryContext): Promise<void> {
    const startup = parseReplicationStartup(ctx.params);
    const cmd = parseReplicationCommand(query);
    switch (cmd.kind) {
      case 'identify': {
        const tl = this.#timeline(startup);
        ctx.sendRowDescription([
          { name: 'systemid', typeOid: PgType.text },
          { name: 'timeline', typeOid: PgType.int4 },
          { name: 'xlogpos', typeOid: PgType.text },
          { name: 'dbname', typeOid: PgType.text },
        ]);
        ctx.sendDataRow([BigInt.asUintN(64, tl.systemId).toString(), '1', formatLsn(tl.commitLsn), null]);
        ctx.sendCommandComplete('IDENTIFY_SYSTEM');
        return;
      }
      case 'show': {
        let value: string;
        if (cmd.name === 'wal_segment_size') value = formatSizeSetting(this.#timeline(startup).walSegSizeBytes);
        else if (cmd.name === 'data_directory_mode') value = '0700';
        else if (cmd.name === 'server_version') value = WALSENDER_SERVER_VERSION;
        else throw new WalSenderError('walsender_unknown_setting', SQLSTATE.undefinedObject, `unrecognized configuration parameter "${cmd.name}"`, { setting: cmd.name });
        ctx.sendRowDescription([{ name: cmd.name, typeOid: PgType.text }]);
        ctx.sendDataRow([value]);
        ctx.sendCommandComplete('SHOW');
        return;
      }
      case 'readSlot':
        // We keep no replication slots: answer as PostgreSQL does for a slot that does not exist.
        ctx.sendRowDescription([
          { name: 'slot_type', typeOid: PgType.text },
          { name: 'restart_lsn', typeOid: PgType.text },
          { name: 'restart_tli', typeOid: PgType.int8 },
        ]);
        ctx.sendDataRow([null, null, null]);
        ctx.sendCommandComplete('READ_REPLICATION_SLOT');
        return;
      case 'timelineHistory':
        throw new WalSenderError('walsender_no_timeline_history', SQLSTATE.undefinedFile,
          `could not open timeline history file for timeline ${cmd.timeline}: this safekeeper serves only timeline 1, which has no history file`, { timeline: cmd.timeline });
      case 'unsupported':
        throw new WalSenderError('walsender_unsupported_command', SQLSTATE.featureNotSupported,
          `${cmd.command} is not supported by the safekeeper walsender (it keeps no replication slots and takes no base backups); it accepts ${KNOWN_COMMANDS}`, { command: cmd.command });
      case 'start':
        await this.#startReplication(cmd, startup, ctx);
        return;
    }
  }

  async #startReplication(cmd: Extract<ReplicationCommand, { kind: 'start' }>, startup: ReplicationStartup, ctx: QueryContext): Promise<void> {
    if (startup.replication !== 'physical') {
      throw new WalSenderError('walsender_not_replication', SQLSTATE.featureNotSupported,
        'START_REPLICATION needs a replication connection: add replication=true to the connection parameters', {});
    }
    const tl = this.#timeline(startup);
    if (cmd.timeline !== null && cmd.timeline !== 1) {
      throw new WalSenderError('walsender_bad_timeline', SQLSTATE.invalidParameterValue,
        `requested timeline ${cmd.timeline} is not in this server's history (the safekeeper serves only timeline 1)`, { timeline: cmd.timeline });
    }
    const startLsn = cmd.startLsn;
    if (startLsn < tl.firstLsn) {
      const segNo = startLsn / BigInt(tl.walSegSizeBytes);
      throw new WalSenderError('walsender_wal_removed', SQLSTATE.undefinedFile,
        `requested WAL segment ${walSegmentFileName(1, segNo, tl.walSegSizeBytes)} has already been removed`,
        { startLsn: formatLsn(startLsn), firstLsn: formatLsn(tl.firstLsn), tenant_id: startup.tenantId, timeline_id: startup.timelineId },
        { hint: `this safekeeper holds WAL of the timeline from ${formatLsn(tl.firstLsn)} on` });
    }
    const log = this.#log.child({ tenant_id: startup.tenantId, timeline_id: startup.timelineId, pid: ctx.processId });
    const stream = new Stream({
      tl,
      startLsn,
      copy: ctx.startCopyBoth(),
      signal: ctx.signal,
      stats: this.stats,
      keepaliveIntervalMs: this.#keepaliveIntervalMs,
      maxMessageBytes: this.#maxMessageBytes,
    });
    this.stats.streamsStarted++;
    this.stats.activeStreams++;
    log.info('walsender: streaming started', {
      startLsn: formatLsn(startLsn), commitLsn: formatLsn(tl.commitLsn), slot: cmd.slot ?? undefined,
      term: cmd.term === null ? undefined : cmd.term, remote: `${ctx.remoteAddress}:${ctx.remotePort}`,
      application_name: ctx.params['application_name'],
    });
    let outcome: 'clientDone' | 'failed' = 'failed';
    try {
      await stream.run();
      outcome = 'clientDone';
    } catch (err) {
      if (!ctx.signal.aborted) this.stats.streamErrors++;
      log.info('walsender: streaming ended with an error', {
        sentUpTo: formatLsn(stream.position), error: err instanceof Error ? err.message : String(err), connectionClosed: ctx.signal.aborted,
      });
      throw err;
    } finally {
      this.stats.activeStreams--;
      if (outcome === 'clientDone') log.info('walsender: streaming ended by the client', { sentUpTo: formatLsn(stream.position), walBytes: Number(stream.position - startLsn) });
    }
    // Both sides sent CopyDone: end the command as PostgreSQL does.
    ctx.sendCommandComplete('START_STREAMING');
  }
}

/** Creates a walsender and starts listening. */
export async function startWalSender(opts: WalSenderOptions): Promise<WalSenderServer> {
  const server = new WalSenderServer(opts);
  await server.listen();
  return server;
}

// ---------------------------------------------------------------------------------------------
// One stream

interface StreamInit {
  tl: WalSenderTimeline;
  startLsn: Lsn;
  copy: CopyBothStream;
  /** The query's signal: connection closed or server closing. */
  signal: AbortSignal;
  stats: WalSenderStats;
  keepaliveIntervalMs: number;
  maxMessageBytes: number;
}

class StreamStopped extends Error {
  constructor() {
    super('stream stopped');
    this.name = 'StreamStopped';
  }
}

class Stream {
  readonly #tl: WalSenderTimeline;
  readonly #copy: CopyBothStream;
  readonly #outer: AbortSignal;
  readonly #stop = new AbortController();
  readonly #stats: WalSenderStats;
  readonly #keepaliveIntervalMs: number;
  readonly #maxMessageBytes: number;
  /** Next LSN to send: everything below has been sent. */
  #pos: Lsn;
  #lastKeepaliveMs = Number.NEGATIVE_INFINITY;
  #lastClientMessageMs: number;

  constructor(init: StreamInit) {
    this.#tl = init.tl;
    this.#copy = init.copy;
    this.#outer = init.signal;
    this.#stats = init.stats;
    this.#keepaliveIntervalMs = init.keepaliveIntervalMs;
    this.#maxMessageBytes = init.maxMessageBytes;
    this.#pos = init.startLsn;
    this.#lastClientMessageMs = Date.now();
  }

  get position(): Lsn {
    return this.#pos;
  }

  /**
   * Runs until the client sends CopyDone (resolves after our CopyDone went out) or something fails
   * (rejects; the caller reports the error). Both loops have stopped when this settles.
   */
  async run(): Promise<void> {
    const onOuterAbort = (): void => this.#stop.abort(this.#outer.reason);
    if (this.#outer.aborted) onOuterAbort();
    else this.#outer.addEventListener('abort', onOuterAbort, { once: true });
    type Outcome = { from: 'receiver' | 'sender'; ok: true } | { from: 'receiver' | 'sender'; ok: false; err: unknown };
    const receiver: Promise<Outcome> = this.#receive().then(() => ({ from: 'receiver', ok: true }), (err: unknown) => ({ from: 'receiver', ok: false, err }));
    const sender: Promise<Outcome> = this.#send().then(() => ({ from: 'sender', ok: true }), (err: unknown) => ({ from: 'sender', ok: false, err }));
    try {
      const first = await Promise.race([receiver, sender]);
      if (first.from === 'receiver') {
        // Stop the sender. It checks the signal before every write, so nothing follows our CopyDone or
        // an ErrorResponse; it is awaited only on the clean path, where the client keeps reading until
        // our CopyDone and a pending drain therefore completes.
        if (!this.#stop.signal.aborted) this.#stop.abort(new StreamStopped());
        if (!first.ok) throw first.err;
        await sender;
        if (this.#outer.aborted) throw this.#outer.reason as unknown;
        this.#copy.end();
        return;
      }
      // The sender only ends by failing (read error, closed connection). The receiver's pending
      // next() is rejected by the server once our handler returns, so it is not awaited here.
      void receiver;
      if (this.#outer.aborted) throw this.#outer.reason as unknown;
      if (first.ok) throw new AssertionFailedError('walsender: the send loop ended without an error');
      throw first.err;
    } finally {
      this.#outer.removeEventListener('abort', onOuterAbort);
      if (!this.#stop.signal.aborted) this.#stop.abort(new StreamStopped());
    }
  }

  // ---- sending --------------------------------------------------------------------------------

  async #send(): Promise<void> {
    const signal = this.#stop.signal;
    const tl = this.#tl;
    let emptyReadRetryMs = EMPTY_READ_RETRY_MIN_MS;
    // Bounded by the stream's life: every pass sends a message, waits (bounded by the keepalive
    // interval or the retry back-off), or ends through the abort signal.
    for (;;) {
      if (signal.aborted) throw signal.reason as unknown;
      if (Date.now() - this.#lastKeepaliveMs >= this.#keepaliveIntervalMs) await this.#sendKeepalive();
      const commit = tl.commitLsn;
      if (this.#pos < commit) {
        const want = Number(BigInt(this.#maxMessageBytes) < commit - this.#pos ? BigInt(this.#maxMessageBytes) : commit - this.#pos);
        const data = await tl.readWal(this.#pos, want);
        if (signal.aborted) throw signal.reason as unknown;
        if (data.length > want) {
          throw new AssertionFailedError(`walsender: timeline returned ${data.length} WAL bytes at ${formatLsn(this.#pos)}, more than the ${want} asked for (commit ${formatLsn(commit)})`,
            { lsn: formatLsn(this.#pos), commitLsn: formatLsn(commit) });
        }
        if (data.length === 0) {
          await sleep(emptyReadRetryMs, signal);
          emptyReadRetryMs = Math.min(EMPTY_READ_RETRY_MAX_MS, emptyReadRetryMs * 2);
          continue;
        }
        emptyReadRetryMs = EMPTY_READ_RETRY_MIN_MS;
        await this.#sendXLogData(data);
        continue;
      }
      // Caught up: wait for the commit LSN to move, at most until the next keepalive is due.
      const waitMs = Math.max(1, Math.ceil(this.#lastKeepaliveMs + this.#keepaliveIntervalMs - Date.now()));
      await tl.waitForCommit(this.#pos, waitMs, signal);
    }
  }

  async #sendXLogData(data: Buffer): Promise<void> {
    const start = this.#pos;
    const end = start + BigInt(data.length);
    const walEnd = this.#tl.commitLsn;
    if (end > walEnd) {
      throw new AssertionFailedError(`walsender: XLogData ${formatLsn(start)}..${formatLsn(end)} would pass the commit LSN ${formatLsn(walEnd)}`,
        { lsn: formatLsn(start), commitLsn: formatLsn(walEnd) });
    }
    const msg = Buffer.allocUnsafe(XLOG_DATA_HEADER_BYTES + data.length);
    msg[0] = MSG_XLOG_DATA;
    msg.writeBigUInt64BE(start, 1);
    msg.writeBigUInt64BE(walEnd, 9);
    msg.writeBigInt64BE(pgTimestampNowUs(), 17);
    data.copy(msg, XLOG_DATA_HEADER_BYTES);
    // Advance before awaiting the drain: the bytes are handed to the socket, the next message follows them.
    this.#pos = end;
    this.#stats.xlogDataMessages++;
    this.#stats.walBytesSent += data.length;
    await this.#copy.write(msg);
  }

  async #sendKeepalive(): Promise<void> {
    const now = Date.now();
    const replyRequested = now - this.#lastClientMessageMs >= REPLY_REQUEST_AFTER_INTERVALS * this.#keepaliveIntervalMs;
    this.#lastKeepaliveMs = now;
    this.#stats.keepalivesSent++;
    await this.#copy.write(encodeKeepalive(this.#tl.commitLsn, replyRequested));
  }

  // ---- receiving ------------------------------------------------------------------------------

  async #receive(): Promise<void> {
    // Bounded by the client: every pass consumes one CopyData message; null = client CopyDone.
    for (;;) {
      const payload = await this.#copy.next();
      if (payload === null) return;
      this.#lastClientMessageMs = Date.now();
      await this.#handleClientMessage(payload);
    }
  }

  async #handleClientMessage(payload: Buffer): Promise<void> {
    const type = payload.length > 0 ? payload[0]! : -1;
    if (type === MSG_STANDBY_REPLY) {
      const reply = decodeStandbyReply(payload);
      this.#stats.standbyReplies++;
      this.#tl.onStandbyReply(reply);
      // As PostgreSQL: a reply that asks for one gets a keepalive right away.
      if (reply.replyRequested && !this.#stop.signal.aborted) await this.#sendKeepalive();
    } else if (type === PAGESERVER_FEEDBACK_TAG) {
      const fb = decodeFeedback(payload);
      this.#stats.pageserverFeedbacks++;
      this.#tl.onPageserverFeedback(fb);
    } else if (type === MSG_HOT_STANDBY_FEEDBACK) {
      if (payload.length < HOT_STANDBY_FEEDBACK_MIN_BYTES || payload.length > HOT_STANDBY_FEEDBACK_MAX_BYTES) {
        throw new WalSenderError('walsender_bad_client_message', SQLSTATE.protocolViolation,
          `malformed hot standby feedback ('h'): ${payload.length} bytes, expected ${HOT_STANDBY_FEEDBACK_MIN_BYTES}..${HOT_STANDBY_FEEDBACK_MAX_BYTES}`, { bytes: payload.length });
      }
      // A safekeeper runs no queries and removes no tuples: there is no xmin to hold back.
      this.#stats.hotStandbyFeedbacks++;
    } else {
      const shown = type >= 0x20 && type < 0x7f ? ` ('${String.fromCharCode(type)}')` : '';
      throw new WalSenderError('walsender_bad_client_message', SQLSTATE.protocolViolation,
        `unexpected message type ${type < 0 ? '(empty message)' : `0x${type.toString(16).padStart(2, '0')}${shown}`} in the replication stream; expected 'r', 'h' or 'z'`,
        { bytes: payload.length });
    }
  }
}
