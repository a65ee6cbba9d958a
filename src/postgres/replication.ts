/**
 * Physical streaming replication client: how Strata (safekeeper from a primary, pageserver from a
 * safekeeper or primary) receives WAL the way a standby's walreceiver does.
 *
 * Built on `pg` (connection, SCRAM/password auth, TLS, error objects; the startup parameter
 * `replication=true` makes the server start a physical walsender) and `pg-copy-streams`' `both()`
 * (the CopyBoth sub-protocol of START_REPLICATION). Replication commands are plain simple-protocol
 * queries (IDENTIFY_SYSTEM, CREATE/DROP/READ_REPLICATION_SLOT, SHOW, START_REPLICATION).
 *
 * Streaming design:
 *  - The CopyBoth duplex runs with `alignOnCopyDataFrame` and a readable side in object mode with a
 *    small high-water mark, so each chunk is exactly one CopyData payload ('w' XLogData or 'k'
 *    keepalive) and at most a handful of them are buffered. The async iterator pulls with read():
 *    a consumer that stops pulling leaves the duplex full, pg-copy-streams stops reading the socket,
 *    the kernel buffers fill and the walsender blocks. Memory stays bounded by a few messages
 *    (≤ 128 KiB each) plus socket buffers, however fast the server produces WAL.
 *  - Standby status updates ('r': write/flush/apply "last byte + 1", client time in µs since
 *    2000-01-01, reply flag) are sent (a) when the caller calls sendStatusUpdate(), (b) right away
 *    when a keepalive asks for a reply, (c) every `statusIntervalMs` from a timer, which also keeps a
 *    slow consumer's connection alive past wal_sender_timeout. (b) and (c) report the positions the
 *    caller last gave via setPositions()/sendStatusUpdate(), never anything the caller has not
 *    confirmed: the walsender moves a slot's restart_lsn to whatever flush we report.
 *    A stream started with `autoStatusUpdates: false` sends no 'r' by itself (no timer, no keepalive
 *    reply, none before CopyDone): a pageserver streaming from a safekeeper reports its progress with
 *    its own feedback message ('z'), written with sendCopyData(), and a safekeeper must not take an
 *    automatic 'r' for it.
 *  - XLogData must be contiguous: the first message starts at the requested LSN and each next one
 *    where the previous ended. A gap is a protocol error, never silently skipped WAL.
 *  - pg hands every protocol event of an active query to the object passed to client.query(). We pass
 *    a small adapter that forwards submit() to the pg-copy-streams duplex and handles the other
 *    callbacks itself: that gives us a definite "command finished" (ReadyForQuery) and "command
 *    failed" (ErrorResponse or lost connection) signal, and tolerates server messages the duplex has
 *    no handler for (e.g. the result row sent after a timeline ends) instead of crashing.
 *  - Errors are StrataErrors with host/port (and LSN/slot where relevant) in their context:
 *    replication_connection_failed (connect/auth), replication_connection_lost (socket closed,
 *    FATAL, walsender terminated), replication_wal_removed ("requested WAL segment ... has already
 *    been removed"), replication_command_failed (other server errors), replication_protocol_error,
 *    replication_closed (used after close()), replication_busy (a command while streaming).
 *  - close() ends streaming cleanly (CopyDone, wait for the server's CopyDone/CommandComplete), then
 *    sends Terminate; every wait is bounded and falls back to destroying the socket.
 */
import type { Duplex } from 'node:stream';
import pg from 'pg';
import * as copyStreams from 'pg-copy-streams';
import { formatLsn, parseLsn } from './lsn.ts';
import type { Lsn } from './lsn.ts';
import { InvalidInputError, StrataError } from '../util/errors.ts';
import type { ErrorContext } from '../util/errors.ts';

// ---------------------------------------------------------------------------------------------
// Public types

export interface ReplicationConnectOptions {
  host: string;
  port: number;
  user: string;
  password?: string;
  /** Ignored by a physical walsender; default = user (pg's default). */
  database?: string;
  /** Shown in pg_stat_replication; matched by synchronous_standby_names. Default 'strata'. */
  applicationName?: string;
  /** Default 10 s. */
  connectTimeoutMs?: number;
  /** Default interval of periodic status updates while streaming. Default 1000 ms. */
  statusIntervalMs?: number;
  /** Bound on each step of close()/end(). Default 5 s. */
  closeTimeoutMs?: number;
  /**
   * The startup packet's `options` (command-line style settings for the server), e.g.
   * `-c tenant_id=<hex> -c timeline_id=<hex>` for a safekeeper. Sent as given.
   */
  options?: string;
}

export interface SystemIdentification {
  systemId: bigint;
  timeline: number;
  /** The server's current WAL flush position. */
  xlogPos: Lsn;
  dbName: string | null;
}

export interface CreateSlotOptions {
  /** Reserve WAL from now on (the slot gets a restart_lsn immediately). */
  reserveWal?: boolean;
  temporary?: boolean;
  /** Treat "already exists" (SQLSTATE 42710) as success. */
  ifNotExists?: boolean;
}

export interface CreatedSlot {
  slotName: string;
  /** consistent_point as reported (0/0 for physical slots in PG15), null when the slot already existed. */
  consistentPoint: Lsn | null;
  created: boolean;
}

export interface SlotInfo {
  slotType: string;
  restartLsn: Lsn | null;
  restartTimeline: number | null;
}

export interface StartReplicationOptions {
  slot?: string;
  startLsn: Lsn;
  timeline?: number;
  /** Overrides the connection's statusIntervalMs for this stream. */
  statusIntervalMs?: number;
  /**
   * Default true: the stream sends standby status updates ('r') by itself (timer, keepalive reply
   * requests, before CopyDone). False: it never does; the caller reports progress itself
   * (sendStatusUpdate() or sendCopyData()).
   */
  autoStatusUpdates?: boolean;
}

export interface XLogDataMessage {
  kind: 'xlogData';
  dataStart: Lsn;
  /** The server's WAL end (flush position) when it sent this. */
  walEnd: Lsn;
  /** Server clock, µs since 2000-01-01. */
  sendTimeUs: bigint;
  /** WAL bytes [dataStart, dataStart + data.length). A view of the received message: copy it to keep it long. */
  data: Buffer;
}

export interface KeepaliveMessage {
  kind: 'keepalive';
  walEnd: Lsn;
  sendTimeUs: bigint;
  replyRequested: boolean;
}

export type ReplicationMessage = XLogDataMessage | KeepaliveMessage;

export interface StandbyPositions {
  /** Each is "last byte + 1" of what was written / flushed / applied; 0 = unknown. */
  write: Lsn;
  flush: Lsn;
  apply: Lsn;
}

// ---------------------------------------------------------------------------------------------
// Constants and helpers

/** 2000-01-01T00:00:00Z, PostgreSQL's timestamp epoch, in Unix ms. */
const PG_EPOCH_UNIX_MS = 946_684_800_000;
const XLOG_DATA_HEADER_BYTES = 1 + 8 + 8 + 8;
const KEEPALIVE_BYTES = 1 + 8 + 8 + 1;
const STATUS_UPDATE_BYTES = 1 + 8 + 8 + 8 + 8 + 1;
const MSG_XLOG_DATA = 0x77; // 'w'
const MSG_KEEPALIVE = 0x6b; // 'k'
const MSG_STATUS_UPDATE = 0x72; // 'r'
/** CopyData payloads buffered in the duplex before it stops reading the socket. */
const READ_AHEAD_MESSAGES = 4;
/** Bound on a CopyData payload the caller sends (feedback messages are tens of bytes). */
const MAX_SENT_COPY_DATA_BYTES = 1024 * 1024;
const DEFAULTS = { connectTimeoutMs: 10_000, statusIntervalMs: 1_000, closeTimeoutMs: 5_000 } as const;
const MAX_U64 = (1n << 64n) - 1n;
/** What ReplicationSlotValidateName accepts. */
const SLOT_NAME = /^[a-z0-9_]{1,63}$/;
const SETTING_NAME = /^[A-Za-z_][A-Za-z0-9_.]{0,62}$/;
const WAL_REMOVED = /requested WAL segment (\S+) has already been removed/;

/** Microseconds since 2000-01-01 now, as PostgreSQL's GetCurrentTimestamp(). */
export function pgTimestampNowUs(): bigint {
  return BigInt(Date.now() - PG_EPOCH_UNIX_MS) * 1000n;
}

/** Encodes a standby status update ('r') CopyData payload. */
export function encodeStatusUpdate(p: StandbyPositions, clientTimeUs: bigint, replyRequested: boolean): Buffer {
  const b = Buffer.allocUnsafe(STATUS_UPDATE_BYTES);
  b[0] = MSG_STATUS_UPDATE;
  b.writeBigUInt64BE(p.write, 1);
  b.writeBigUInt64BE(p.flush, 9);
  b.writeBigUInt64BE(p.apply, 17);
  b.writeBigInt64BE(clientTimeUs, 25);
  b[33] = replyRequested ? 1 : 0;
  return b;
}

/** Decodes one CopyData payload of a physical replication stream. Throws replication_protocol_error. */
export function decodeReplicationMessage(payload: Buffer, context: ErrorContext = {}): ReplicationMessage {
  const type = payload.length > 0 ? payload[0]! : -1;
  if (type === MSG_XLOG_DATA) {
    if (payload.length < XLOG_DATA_HEADER_BYTES) {
      throw new ReplicationError('replication_protocol_error', `XLogData message of ${payload.length} bytes is shorter than its ${XLOG_DATA_HEADER_BYTES}-byte header`, context);
    }
    return {
      kind: 'xlogData',
      dataStart: payload.readBigUInt64BE(1),
      walEnd: payload.readBigUInt64BE(9),
      sendTimeUs: payload.readBigInt64BE(17),
      data: payload.subarray(XLOG_DATA_HEADER_BYTES),
    };
  }
  if (type === MSG_KEEPALIVE) {
    if (payload.length !== KEEPALIVE_BYTES) {
      throw new ReplicationError('replication_protocol_error', `keepalive message of ${payload.length} bytes, expected ${KEEPALIVE_BYTES}`, context);
    }
    return { kind: 'keepalive', walEnd: payload.readBigUInt64BE(1), sendTimeUs: payload.readBigInt64BE(9), replyRequested: payload[17] !== 0 };
  }
  throw new ReplicationError('replication_protocol_error', `unknown replication message type 0x${type.toString(16)} (${payload.length} bytes)`, { ...context, type });
}

export class ReplicationError extends StrataError {
  /** The server's SQLSTATE, when the server reported the error. */
  readonly sqlState: string | undefined;

  constructor(code: string, message: string, context: ErrorContext = {}, cause?: unknown) {
    super(code, message, context, cause === undefined ? undefined : { cause });
    this.name = 'ReplicationError';
    const s = context['sqlState'];
    this.sqlState = typeof s === 'string' ? s : undefined;
  }
}

interface PgErrorLike {
  message?: unknown;
  code?: unknown;
  severity?: unknown;
}

function pgErrorParts(err: unknown): { message: string; sqlState: string | undefined; severity: string | undefined } {
  const e = (err ?? {}) as PgErrorLike;
  const message = typeof e.message === 'string' ? e.message : String(err);
  const sqlState = typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) ? e.code : undefined;
  const severity = typeof e.severity === 'string' ? e.severity : undefined;
  return { message, sqlState, severity };
}

/** Maps an error from pg (server ErrorResponse, socket failure) to a typed ReplicationError. */
function mapServerError(err: unknown, what: string, context: ErrorContext): ReplicationError {
  if (err instanceof ReplicationError) return err;
  const { message, sqlState, severity } = pgErrorParts(err);
  const ctx: ErrorContext = { ...context, ...(sqlState !== undefined ? { sqlState } : {}) };
  const where = `${context['host']}:${context['port']}`;
  const removed = WAL_REMOVED.exec(message);
  if (removed !== null) {
    return new ReplicationError('replication_wal_removed', `${what} on ${where}: the server no longer has the WAL: ${message}`, { ...ctx, segment: removed[1] }, err);
  }
  if (severity === 'FATAL' || severity === 'PANIC' || sqlState === undefined) {
    return new ReplicationError('replication_connection_lost', `${what} on ${where}: connection lost: ${message}`, ctx, err);
  }
  return new ReplicationError('replication_command_failed', `${what} on ${where} failed: ${message}`, ctx, err);
}

function checkLsn(name: string, v: Lsn): void {
  if (typeof v !== 'bigint' || v < 0n || v > MAX_U64) throw new InvalidInputError(`${name} must be a bigint LSN in [0, 2^64), got ${String(v)}`, { [name]: String(v) });
}

function checkSlotName(name: string): void {
  if (!SLOT_NAME.test(name)) {
    throw new InvalidInputError(`invalid replication slot name "${name}": use 1-63 lower-case letters, digits and underscores`, { slot: name });
  }
}

function intOrNull(v: unknown): number | null {
  if (v === null || v === undefined) return null;
  const n = typeof v === 'number' ? v : Number(v);
  return Number.isSafeInteger(n) ? n : null;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<{ ok: true; value: T } | { ok: false }> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<{ ok: false }>((resolve) => { timer = setTimeout(() => resolve({ ok: false }), ms); });
  return Promise.race([p.then((value) => ({ ok: true as const, value })), t]).finally(() => clearTimeout(timer));
}

/** The pg-copy-streams CopyBoth duplex, as far as we use it (its .d.ts does not declare both()). */
interface CopyBothDuplex extends Duplex {
  submit(connection: unknown): void;
  handleReadyForQuery(connection: unknown): void;
}

type BothFactory = (sql: string, options: Record<string, unknown>) => CopyBothDuplex;

const copyBoth: BothFactory = (copyStreams as unknown as { both: BothFactory }).both;

interface PgConnectionInternals {
  connection?: { stream?: { destroy?: () => void; destroyed?: boolean } };
}

// ---------------------------------------------------------------------------------------------
// Connection

export class ReplicationConnection {
  readonly host: string;
  readonly port: number;
  readonly applicationName: string;
  readonly #client: pg.Client;
  readonly #statusIntervalMs: number;
  readonly #closeTimeoutMs: number;
  #active: ReplicationStream | null = null;
  #lost: ReplicationError | null = null;
  #closing: Promise<void> | null = null;

  private constructor(client: pg.Client, opts: ReplicationConnectOptions) {
    this.#client = client;
    this.host = opts.host;
    this.port = opts.port;
    this.applicationName = opts.applicationName ?? 'strata';
    this.#statusIntervalMs = opts.statusIntervalMs ?? DEFAULTS.statusIntervalMs;
    this.#closeTimeoutMs = opts.closeTimeoutMs ?? DEFAULTS.closeTimeoutMs;
  }

  /** Opens a physical replication connection (startup parameter replication=true). */
  static async connect(opts: ReplicationConnectOptions): Promise<ReplicationConnection> {
    for (const [name, v] of [['statusIntervalMs', opts.statusIntervalMs], ['connectTimeoutMs', opts.connectTimeoutMs], ['closeTimeoutMs', opts.closeTimeoutMs]] as const) {
      if (v !== undefined && (!Number.isSafeInteger(v) || v <= 0)) throw new InvalidInputError(`${name} must be a positive integer, got ${v}`);
    }
    // @types/pg omits `replication` from ClientConfig, though pg passes it into the startup packet.
    const config: pg.ClientConfig & { replication: string } = {
      host: opts.host,
      port: opts.port,
      user: opts.user,
      ...(opts.password !== undefined ? { password: opts.password } : {}),
      ...(opts.database !== undefined ? { database: opts.database } : {}),
      ...(opts.options !== undefined ? { options: opts.options } : {}),
      application_name: opts.applicationName ?? 'strata',
      replication: 'true',
      keepAlive: true,
      connectionTimeoutMillis: opts.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
    };
    if (opts.options !== undefined && (typeof opts.options !== 'string' || opts.options.includes('\0'))) {
      throw new InvalidInputError('options must be a string without NUL bytes');
    }
    const client = new pg.Client(config);
    const conn = new ReplicationConnection(client, opts);
    // Without a listener, an unexpected disconnect would be an uncaught 'error' event.
    client.on('error', (err) => conn.#onClientError(err));
    try {
      await client.connect();
    } catch (err) {
      const { message, sqlState } = pgErrorParts(err);
      await withTimeout(client.end().catch(() => undefined), 1_000);
      conn.#destroySocket();
      throw new ReplicationError('replication_connection_failed', `could not open a replication connection to ${opts.host}:${opts.port} as user "${opts.user}": ${message}`,
        { host: opts.host, port: opts.port, user: opts.user, ...(sqlState !== undefined ? { sqlState } : {}) }, err);
    }
    return conn;
  }

  #context(extra: ErrorContext = {}): ErrorContext {
    return { host: this.host, port: this.port, ...extra };
  }

  #onClientError(err: Error): void {
    if (this.#lost === null) this.#lost = mapServerError(err, 'replication connection', this.#context());
    this.#active?.onConnectionError(err);
  }

  /** The socket under pg's Client, for last-resort destruction. */
  #destroySocket(): void {
    const stream = (this.#client as unknown as PgConnectionInternals).connection?.stream;
    if (stream !== undefined && typeof stream.destroy === 'function' && stream.destroyed !== true) stream.destroy();
  }

  #checkUsable(what: string): void {
    if (this.#closing !== null) throw new ReplicationError('replication_closed', `${what}: the replication connection to ${this.host}:${this.port} is closed`, this.#context());
    if (this.#lost !== null) throw this.#lost;
    if (this.#active !== null) {
      throw new ReplicationError('replication_busy', `${what}: the connection to ${this.host}:${this.port} is streaming; end the stream first`, this.#context());
    }
  }

  async #command(sql: string, what: string, context: ErrorContext = {}): Promise<pg.QueryResult> {
    this.#checkUsable(what);
    try {
      return await this.#client.query(sql);
    } catch (err) {
      throw mapServerError(err, what, this.#context({ command: sql, ...context }));
    }
  }

  async identifySystem(): Promise<SystemIdentification> {
    const res = await this.#command('IDENTIFY_SYSTEM', 'IDENTIFY_SYSTEM');
    const row = res.rows[0] as { systemid?: unknown; timeline?: unknown; xlogpos?: unknown; dbname?: unknown } | undefined;
    if (row === undefined || typeof row.systemid !== 'string' || typeof row.xlogpos !== 'string') {
      throw new ReplicationError('replication_protocol_error', `IDENTIFY_SYSTEM on ${this.host}:${this.port} returned an unexpected row`, this.#context());
    }
    const timeline = intOrNull(row.timeline);
    if (timeline === null) throw new ReplicationError('replication_protocol_error', `IDENTIFY_SYSTEM returned timeline ${String(row.timeline)}`, this.#context());
    return {
      systemId: BigInt(row.systemid),
      timeline,
      xlogPos: parseLsn(row.xlogpos),
      dbName: typeof row.dbname === 'string' ? row.dbname : null,
    };
  }

  /** `SHOW name` (e.g. wal_segment_size). */
  async show(setting: string): Promise<string> {
    if (!SETTING_NAME.test(setting)) throw new InvalidInputError(`invalid setting name "${setting}"`, { setting });
    const res = await this.#command(`SHOW ${setting}`, `SHOW ${setting}`);
    const row = res.rows[0] as Record<string, unknown> | undefined;
    const value = row === undefined ? undefined : Object.values(row)[0];
    if (typeof value !== 'string') throw new ReplicationError('replication_protocol_error', `SHOW ${setting} returned no value`, this.#context());
    return value;
  }

  async createPhysicalSlot(name: string, opts: CreateSlotOptions = {}): Promise<CreatedSlot> {
    checkSlotName(name);
    const sql = `CREATE_REPLICATION_SLOT "${name}"${opts.temporary === true ? ' TEMPORARY' : ''} PHYSICAL${opts.reserveWal === true ? ' (RESERVE_WAL)' : ''}`;
    try {
      const res = await this.#command(sql, 'CREATE_REPLICATION_SLOT', { slot: name });
      const row = res.rows[0] as { slot_name?: unknown; consistent_point?: unknown } | undefined;
      const cp = row?.consistent_point;
      return { slotName: name, consistentPoint: typeof cp === 'string' ? parseLsn(cp) : null, created: true };
    } catch (err) {
      if (opts.ifNotExists === true && err instanceof ReplicationError && err.sqlState === '42710') {
        return { slotName: name, consistentPoint: null, created: false };
      }
      throw err;
    }
  }

  /** DROP_REPLICATION_SLOT; with ifExists, a missing slot (SQLSTATE 42704) is not an error. */
  async dropSlot(name: string, opts: { wait?: boolean; ifExists?: boolean } = {}): Promise<void> {
    checkSlotName(name);
    try {
      await this.#command(`DROP_REPLICATION_SLOT "${name}"${opts.wait === true ? ' WAIT' : ''}`, 'DROP_REPLICATION_SLOT', { slot: name });
    } catch (err) {
      if (opts.ifExists === true && err instanceof ReplicationError && err.sqlState === '42704') return;
      throw err;
    }
  }

  /** READ_REPLICATION_SLOT (PG15+): null when there is no such slot. */
  async readSlot(name: string): Promise<SlotInfo | null> {
    checkSlotName(name);
    const res = await this.#command(`READ_REPLICATION_SLOT "${name}"`, 'READ_REPLICATION_SLOT', { slot: name });
    const row = res.rows[0] as { slot_type?: unknown; restart_lsn?: unknown; restart_tli?: unknown } | undefined;
    if (row === undefined || typeof row.slot_type !== 'string') return null;
    return {
      slotType: row.slot_type,
      restartLsn: typeof row.restart_lsn === 'string' ? parseLsn(row.restart_lsn) : null,
      restartTimeline: intOrNull(row.restart_tli),
    };
  }

  /**
   * START_REPLICATION [SLOT s] PHYSICAL startLsn [TIMELINE t]. Returns at once; server errors (no such
   * slot, WAL removed, start ahead of flush) surface from the stream's next().
   */
  startReplication(opts: StartReplicationOptions): ReplicationStream {
    checkLsn('startLsn', opts.startLsn);
    if (opts.slot !== undefined) checkSlotName(opts.slot);
    if (opts.timeline !== undefined && (!Number.isSafeInteger(opts.timeline) || opts.timeline < 1 || opts.timeline > 0xffff_ffff)) {
      throw new InvalidInputError(`invalid timeline ${opts.timeline}`);
    }
    const interval = opts.statusIntervalMs ?? this.#statusIntervalMs;
    if (!Number.isSafeInteger(interval) || interval <= 0) throw new InvalidInputError(`statusIntervalMs must be a positive integer, got ${interval}`);
    this.#checkUsable('START_REPLICATION');
    const sql = `START_REPLICATION${opts.slot !== undefined ? ` SLOT "${opts.slot}"` : ''} PHYSICAL ${formatLsn(opts.startLsn)}${opts.timeline !== undefined ? ` TIMELINE ${opts.timeline}` : ''}`;
    const stream = new ReplicationStream({
      sql,
      startLsn: opts.startLsn,
      statusIntervalMs: interval,
      autoStatusUpdates: opts.autoStatusUpdates ?? true,
      closeTimeoutMs: this.#closeTimeoutMs,
      context: this.#context({ startLsn: formatLsn(opts.startLsn), ...(opts.slot !== undefined ? { slot: opts.slot } : {}) }),
      onFinished: (s) => { if (this.#active === s) this.#active = null; },
    });
    this.#active = stream;
    stream.submitTo(this.#client);
    return stream;
  }

  /** Ends streaming (if any) cleanly, sends Terminate and closes the socket. Idempotent; never throws. */
  close(): Promise<void> {
    if (this.#closing === null) this.#closing = this.#doClose();
    return this.#closing;
  }

  async #doClose(): Promise<void> {
    const active = this.#active;
    if (active !== null) {
      try {
        await active.end();
      } catch {
        // the socket is destroyed below if the protocol did not finish
      }
    }
    const ended = await withTimeout(this.#client.end().catch(() => undefined), this.#closeTimeoutMs);
    if (!ended.ok) this.#destroySocket();
    // pg resolves end() on the connection's 'end'; make sure the fd is released either way.
    this.#destroySocket();
  }
}

// ---------------------------------------------------------------------------------------------
// Stream

interface StreamInit {
  sql: string;
  startLsn: Lsn;
  statusIntervalMs: number;
  autoStatusUpdates: boolean;
  closeTimeoutMs: number;
  context: ErrorContext;
  onFinished(stream: ReplicationStream): void;
}

type StreamState = 'streaming' | 'finishing' | 'ended' | 'failed';

/** Counters for monitoring and tests. */
export interface ReplicationStreamStats {
  xlogDataMessages: number;
  keepalives: number;
  walBytes: number;
  /** Standby status updates ('r') sent, automatic or by sendStatusUpdate(). */
  statusUpdatesSent: number;
  /** Other CopyData messages sent with sendCopyData(). */
  copyDataSent: number;
  /** End of the last WAL received ("last byte + 1"); startLsn before any data. */
  receivedUpTo: Lsn;
}

export class ReplicationStream implements AsyncIterable<ReplicationMessage> {
  readonly startLsn: Lsn;
  readonly stats: ReplicationStreamStats;
  readonly #copy: CopyBothDuplex;
  readonly #init: StreamInit;
  #state: StreamState = 'streaming';
  #failure: ReplicationError | null = null;
  #positions: StandbyPositions = { write: 0n, flush: 0n, apply: 0n };
  #timer: NodeJS.Timeout | null = null;
  /** Pending next() calls (more than one only if a caller issues overlapping next() calls). */
  #waiters: (() => void)[] = [];
  #weEnded = false;
  #discarding = false;
  #settled: Promise<void>;
  #settle: () => void = () => undefined;

  constructor(init: StreamInit) {
    this.#init = init;
    this.startLsn = init.startLsn;
    this.stats = { xlogDataMessages: 0, keepalives: 0, walBytes: 0, statusUpdatesSent: 0, copyDataSent: 0, receivedUpTo: init.startLsn };
    this.#settled = new Promise<void>((resolve) => { this.#settle = resolve; });
    this.#copy = copyBoth(init.sql, { alignOnCopyDataFrame: true, readableObjectMode: true, readableHighWaterMark: READ_AHEAD_MESSAGES });
    this.#copy.on('readable', () => this.#onReadable());
    this.#copy.on('end', () => this.#onReadableEnd());
    this.#copy.on('error', (err) => this.#fail(mapServerError(err, 'replication stream', this.#context())));
  }

  /** Hands the CopyBoth query to pg through an adapter that reports the command's outcome to us. */
  submitTo(client: pg.Client): void {
    const copy = this.#copy;
    const adapter = {
      text: this.#init.sql,
      submit: (connection: unknown): void => copy.submit(connection),
      handleError: (err: Error): void => this.#fail(mapServerError(err, this.#init.sql, this.#context())),
      handleReadyForQuery: (connection: unknown): void => {
        if (this.#weEnded) {
          try {
            copy.handleReadyForQuery(connection); // completes the duplex's end() (its _final callback)
          } catch {
            // the duplex had not reached _final yet; nothing more to complete
          }
        }
        this.#finish();
      },
      handleCommandComplete: (): void => undefined,
      handleRowDescription: (): void => undefined,
      handleDataRow: (): void => undefined,
      handleEmptyQuery: (): void => undefined,
      handleCopyData: (): void => undefined,
      handleCopyInResponse: (): void => undefined,
      handlePortalSuspended: (): void => undefined,
    };
    client.query(adapter as unknown as pg.Submittable);
    this.#startTimer();
  }

  #context(): ErrorContext {
    return { ...this.#init.context, receivedUpTo: formatLsn(this.stats.receivedUpTo) };
  }

  get state(): StreamState {
    return this.#state;
  }

  /** Positions used by keepalive replies and periodic updates. */
  setPositions(p: StandbyPositions): void {
    checkLsn('write', p.write);
    checkLsn('flush', p.flush);
    checkLsn('apply', p.apply);
    this.#positions = { write: p.write, flush: p.flush, apply: p.apply };
  }

  get positions(): StandbyPositions {
    return { ...this.#positions };
  }

  /** Sends a standby status update now (and remembers the positions for later automatic ones). */
  sendStatusUpdate(p: StandbyPositions & { replyRequested?: boolean }): void {
    this.setPositions(p);
    if (this.#state !== 'streaming') {
      throw new ReplicationError('replication_stream_ended', `sendStatusUpdate: the replication stream is ${this.#state}`, this.#context());
    }
    this.#sendPositions(p.replyRequested === true);
  }

  #sendPositions(replyRequested: boolean): void {
    if (this.#state !== 'streaming' || this.#weEnded) return;
    this.#copy.write(encodeStatusUpdate(this.#positions, pgTimestampNowUs(), replyRequested));
    this.stats.statusUpdatesSent++;
  }

  /** A status update the stream sends on its own; none when autoStatusUpdates is off. */
  #sendAutomatic(): void {
    if (this.#init.autoStatusUpdates) this.#sendPositions(false);
  }

  /**
   * Sends one CopyData message with `payload` as its content (e.g. a pageserver feedback 'z'
   * message). The payload is copied; it must not be empty and at most 1 MiB. Throws
   * replication_stream_ended once the stream is finishing or over.
   */
  sendCopyData(payload: Buffer): void {
    if (!Buffer.isBuffer(payload) || payload.length === 0 || payload.length > MAX_SENT_COPY_DATA_BYTES) {
      throw new InvalidInputError(`sendCopyData: payload must be 1..${MAX_SENT_COPY_DATA_BYTES} bytes`, this.#context());
    }
    if (this.#state !== 'streaming' || this.#weEnded) {
      throw new ReplicationError('replication_stream_ended', `sendCopyData: the replication stream is ${this.#state}`, this.#context());
    }
    this.#copy.write(Buffer.from(payload));
    this.stats.copyDataSent++;
  }

  #startTimer(): void {
    if (!this.#init.autoStatusUpdates) return;
    this.#timer = setInterval(() => this.#sendPositions(false), this.#init.statusIntervalMs);
    this.#timer.unref();
  }

  #stopTimer(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  #notify(): void {
    if (this.#waiters.length === 0) return;
    for (const w of this.#waiters.splice(0)) w();
  }

  #onReadable(): void {
    if (this.#discarding) {
      // Draining after end(): throw away WAL still in flight. Bounded by what the duplex holds.
      while (this.#copy.read() !== null) { /* discard */ }
      return;
    }
    this.#notify();
  }

  #onReadableEnd(): void {
    if (this.#state === 'streaming') {
      // The server finished its side (CopyDone: end of a historic timeline) or is shutting down. Answer
      // with our CopyDone so the walsender can complete the command; the outcome arrives via the adapter.
      this.#state = 'finishing';
      this.#stopTimer();
      if (!this.#weEnded) {
        this.#weEnded = true;
        this.#copy.end();
      }
    }
    this.#notify();
  }

  /** pg reported that the connection failed while this stream was active. */
  onConnectionError(err: Error): void {
    this.#fail(mapServerError(err, 'replication stream', this.#context()));
  }

  #fail(err: ReplicationError): void {
    if (this.#state === 'ended' || this.#state === 'failed') return;
    this.#state = 'failed';
    this.#failure = err;
    this.#stopTimer();
    this.#init.onFinished(this);
    this.#settle();
    this.#notify();
  }

  #finish(): void {
    if (this.#state === 'ended' || this.#state === 'failed') return;
    this.#state = 'ended';
    this.#stopTimer();
    this.#init.onFinished(this);
    this.#settle();
    this.#notify();
  }

  /**
   * The next message, or null when the stream has ended normally (server ended the copy, or end()).
   * Messages already received are delivered before a failure is thrown.
   */
  async next(): Promise<ReplicationMessage | null> {
    // Bounded: each pass returns, throws, or waits for an event that changes the state or adds data.
    for (;;) {
      if (!this.#discarding) {
        const chunk = this.#copy.read() as Buffer | null;
        if (chunk !== null) return this.#handle(chunk);
      }
      if (this.#failure !== null) throw this.#failure;
      if (this.#state === 'ended') return null;
      await new Promise<void>((resolve) => { this.#waiters.push(resolve); });
    }
  }

  #handle(payload: Buffer): ReplicationMessage {
    const msg = decodeReplicationMessage(payload, this.#context());
    if (msg.kind === 'xlogData') {
      if (msg.dataStart !== this.stats.receivedUpTo) {
        const err = new ReplicationError('replication_protocol_error',
          `XLogData starts at ${formatLsn(msg.dataStart)} but the stream is at ${formatLsn(this.stats.receivedUpTo)}: WAL would be skipped or repeated`,
          { ...this.#context(), dataStart: formatLsn(msg.dataStart) });
        this.#fail(err);
        throw err;
      }
      this.stats.xlogDataMessages++;
      this.stats.walBytes += msg.data.length;
      this.stats.receivedUpTo = msg.dataStart + BigInt(msg.data.length);
    } else {
      this.stats.keepalives++;
      if (msg.replyRequested) this.#sendAutomatic();
    }
    return msg;
  }

  [Symbol.asyncIterator](): AsyncIterator<ReplicationMessage> {
    return {
      next: async (): Promise<IteratorResult<ReplicationMessage>> => {
        const m = await this.next();
        return m === null ? { done: true, value: undefined } : { done: false, value: m };
      },
      // Breaking out of a for-await loop leaves the stream running; call end() or close() to stop it.
      return: async (): Promise<IteratorResult<ReplicationMessage>> => ({ done: true, value: undefined }),
    };
  }

  /**
   * Stops streaming: sends the last positions and CopyDone, discards WAL still in flight, and waits
   * for the server to finish the command. The connection can run commands again afterwards.
   */
  async end(): Promise<void> {
    if (this.#state === 'ended' || this.#state === 'failed') {
      return;
    }
    if (!this.#weEnded) {
      this.#sendAutomatic();
      this.#weEnded = true;
      this.#state = 'finishing';
      this.#stopTimer();
      this.#copy.end();
    }
    this.#discarding = true;
    this.#onReadable();
    const done = await withTimeout(this.#settled, this.#init.closeTimeoutMs);
    if (!done.ok) {
      const err = new ReplicationError('replication_close_timeout', `the server did not finish streaming within ${this.#init.closeTimeoutMs} ms after CopyDone`, this.#context());
      this.#fail(err);
      throw err;
    }
    // A server error racing with our CopyDone does not matter to a caller who is stopping anyway; a lost
    // connection does (the connection cannot be used again).
    const failure = this.#failure as ReplicationError | null;
    if (failure !== null && failure.code === 'replication_connection_lost') throw failure;
  }
}
