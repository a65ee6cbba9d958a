/**
 * PostgreSQL frontend/backend protocol (v3) codec for Strata's own libpq-protocol server.
 *
 * Two halves:
 *  - MessageFramer cuts the byte stream a client sends into messages. Before the startup message the
 *    stream is "untyped" (int32 length, then body: SSLRequest, GSSENCRequest, CancelRequest,
 *    StartupMessage); afterwards every message is "typed" (one type byte, int32 length, body). The
 *    owner flips `typed` from inside its onMessage callback, which runs synchronously in the middle of
 *    push(), so bytes that follow a StartupMessage in the same TCP chunk are already framed the new way.
 *  - BackendWriter encodes server messages into one growing buffer; the connection hands the bytes to
 *    the socket with take() at flush points, the way PostgreSQL's 8 KB send buffer works.
 *
 * Allocation rules (the reason this file is shaped like node-postgres' pg-protocol, not like a
 * "decode into objects" parser):
 *  - A message that lies wholly inside one socket chunk is handed out as a view of that chunk: no copy.
 *  - A message that spans chunks is copied once into a buffer of exactly its size, allocated as soon
 *    as its header is known. A 100 MB CopyData therefore costs one allocation and one copy per
 *    received chunk, never repeated concatenation.
 *  - Bodies handed to onMessage are never written to afterwards (views of socket chunks or private
 *    buffers), so a consumer may queue them and read them later.
 *  - BackendWriter writes straight into its buffer (no per-field temporaries); take() gives the filled
 *    part away and starts a fresh buffer, because the socket keeps a reference until the kernel has it.
 *
 * Limits: every length is checked against a per-type maximum before anything is allocated, and the
 * untyped startup packet is bounded like PostgreSQL's (10,000 bytes). Violations throw ProtocolError
 * (SQLSTATE 08P01); the connection answers with a FATAL error and closes.
 */
import { StrataError } from '../../util/errors.ts';
import type { ErrorContext } from '../../util/errors.ts';

// ---------------------------------------------------------------------------------------------
// Constants

/** Protocol version 3.0 as sent in the StartupMessage (major << 16 | minor). */
export const PROTOCOL_VERSION_3_0 = 3 << 16;
export const SSL_REQUEST_CODE = (1234 << 16) | 5679;
export const GSSENC_REQUEST_CODE = (1234 << 16) | 5680;
export const CANCEL_REQUEST_CODE = (1234 << 16) | 5678;
/** PostgreSQL's MAX_STARTUP_PACKET_LENGTH. */
export const MAX_STARTUP_PACKET_BYTES = 10_000;

/** Frontend (client → server) message type bytes. */
export const FrontendMessage = {
  Query: 0x51, // 'Q'
  Terminate: 0x58, // 'X'
  CopyData: 0x64, // 'd'
  CopyDone: 0x63, // 'c'
  CopyFail: 0x66, // 'f'
  Password: 0x70, // 'p' (also SASLInitialResponse, SASLResponse, GSSResponse)
  Parse: 0x50, // 'P'
  Bind: 0x42, // 'B'
  Describe: 0x44, // 'D'
  Execute: 0x45, // 'E'
  Close: 0x43, // 'C'
  Flush: 0x48, // 'H'
  Sync: 0x53, // 'S'
  FunctionCall: 0x46, // 'F'
} as const;

/** Backend (server → client) message type bytes. */
export const BackendMessage = {
  Authentication: 0x52, // 'R'
  ParameterStatus: 0x53, // 'S'
  BackendKeyData: 0x4b, // 'K'
  ReadyForQuery: 0x5a, // 'Z'
  RowDescription: 0x54, // 'T'
  DataRow: 0x44, // 'D'
  CommandComplete: 0x43, // 'C'
  EmptyQueryResponse: 0x49, // 'I'
  ErrorResponse: 0x45, // 'E'
  NoticeResponse: 0x4e, // 'N'
  CopyInResponse: 0x47, // 'G'
  CopyOutResponse: 0x48, // 'H'
  CopyBothResponse: 0x57, // 'W'
  CopyData: 0x64, // 'd'
  CopyDone: 0x63, // 'c'
  NegotiateProtocolVersion: 0x76, // 'v'
} as const;

/** Authentication request codes carried by an 'R' message. */
export const AuthRequest = {
  Ok: 0,
  CleartextPassword: 3,
  MD5Password: 5,
  SASL: 10,
  SASLContinue: 11,
  SASLFinal: 12,
} as const;

/** Type byte the framer reports for untyped (pre-startup) packets. */
export const UNTYPED = -1;

/** A few type OIDs handlers commonly use, with their typlen for RowDescription. */
export const PgType = {
  bool: 16,
  bytea: 17,
  int8: 20,
  int2: 21,
  int4: 23,
  text: 25,
  oid: 26,
  float8: 701,
} as const;

const TYPE_LENGTH: ReadonlyMap<number, number> = new Map([
  [PgType.bool, 1], [PgType.int8, 8], [PgType.int2, 2], [PgType.int4, 4], [PgType.oid, 4], [PgType.float8, 8],
]);

// ---------------------------------------------------------------------------------------------
// Errors

/** The client broke the protocol (bad length, unknown message, bad startup packet). Fatal for the connection. */
export class ProtocolError extends StrataError {
  readonly sqlState: string;

  constructor(message: string, context: ErrorContext = {}, sqlState = '08P01') {
    super('pgwire_protocol_violation', message, context);
    this.name = 'ProtocolError';
    this.sqlState = sqlState;
  }
}

/** Printable name of a message type byte for error messages. */
export function messageTypeName(type: number): string {
  if (type === UNTYPED) return 'startup packet';
  const ch = type >= 0x20 && type < 0x7f ? `'${String.fromCharCode(type)}'` : '';
  return `${ch} (0x${type.toString(16).padStart(2, '0')})`.trim();
}

// ---------------------------------------------------------------------------------------------
// Framing

export interface FramerOptions {
  /** Largest body (bytes after the length word) accepted for a typed message of this type. */
  maxBodyBytes(type: number): number;
  /** Called synchronously for each complete message; may set `framer.typed`. May throw (push() rethrows). */
  onMessage(type: number, body: Buffer): void;
}

const STATE_HEADER = 0;
const STATE_BODY = 1;

export class MessageFramer {
  /** false until the StartupMessage has been received. */
  typed = false;
  /** Total bytes of all messages delivered so far (headers included). */
  bytesReceived = 0;

  readonly #opts: FramerOptions;
  /** Partial header bytes (at most 5). */
  readonly #header = Buffer.alloc(5);
  #headerFill = 0;
  #state: number = STATE_HEADER;
  #type = 0;
  /** Private buffer for a message body that spans chunks. */
  #body: Buffer | null = null;
  #bodyFill = 0;
  #failed = false;

  constructor(opts: FramerOptions) {
    this.#opts = opts;
  }

  /** Bytes buffered in a partially received message. */
  get pendingBytes(): number {
    return this.#headerFill + this.#bodyFill;
  }

  /** Feeds bytes from the socket. Throws ProtocolError on malformed input; the framer is unusable afterwards. */
  push(chunk: Buffer): void {
    if (this.#failed) throw new ProtocolError('framer used after a protocol error');
    try {
      this.#push(chunk);
    } catch (err) {
      this.#failed = true;
      throw err;
    }
  }

  #push(chunk: Buffer): void {
    let off = 0;
    const len = chunk.length;
    // Bounded: every iteration consumes at least one byte or delivers a message that consumed its header.
    while (off < len) {
      if (this.#state === STATE_HEADER) {
        const headerLen = this.typed ? 5 : 4;
        if (this.#headerFill === 0 && len - off >= headerLen) {
          // Fast path: whole header in this chunk.
          const type = this.typed ? chunk[off]! : UNTYPED;
          const msgLen = chunk.readInt32BE(this.typed ? off + 1 : off);
          off += headerLen;
          const bodyLen = this.#checkLength(type, msgLen);
          if (len - off >= bodyLen) {
            const body = chunk.subarray(off, off + bodyLen);
            off += bodyLen;
            this.#deliver(type, body, headerLen);
            continue;
          }
          this.#beginBody(type, bodyLen);
          continue;
        }
        // Slow path: assemble the header byte by byte across chunks.
        const need = headerLen - this.#headerFill;
        const n = Math.min(need, len - off);
        chunk.copy(this.#header, this.#headerFill, off, off + n);
        this.#headerFill += n;
        off += n;
        if (this.#headerFill < headerLen) break;
        const type = this.typed ? this.#header[0]! : UNTYPED;
        const msgLen = this.#header.readInt32BE(this.typed ? 1 : 0);
        this.#headerFill = 0;
        const bodyLen = this.#checkLength(type, msgLen);
        if (bodyLen === 0) {
          this.#deliver(type, EMPTY, headerLen);
          continue;
        }
        if (len - off >= bodyLen) {
          const body = chunk.subarray(off, off + bodyLen);
          off += bodyLen;
          this.#deliver(type, body, headerLen);
          continue;
        }
        this.#beginBody(type, bodyLen);
        continue;
      }
      // STATE_BODY: copy into the private body buffer.
      const body = this.#body!;
      const n = Math.min(body.length - this.#bodyFill, len - off);
      chunk.copy(body, this.#bodyFill, off, off + n);
      this.#bodyFill += n;
      off += n;
      if (this.#bodyFill === body.length) {
        this.#body = null;
        this.#bodyFill = 0;
        this.#state = STATE_HEADER;
        this.#deliver(this.#type, body, this.typed ? 5 : 4);
      }
    }
  }

  #beginBody(type: number, bodyLen: number): void {
    this.#type = type;
    this.#body = Buffer.allocUnsafe(bodyLen);
    this.#bodyFill = 0;
    this.#state = STATE_BODY;
  }

  #deliver(type: number, body: Buffer, headerLen: number): void {
    this.bytesReceived += headerLen + body.length;
    this.#opts.onMessage(type, body);
  }

  /** Validates a length word; returns the body length. */
  #checkLength(type: number, msgLen: number): number {
    if (type === UNTYPED) {
      if (msgLen < 8 || msgLen > MAX_STARTUP_PACKET_BYTES) {
        throw new ProtocolError(`invalid length of startup packet: ${msgLen} bytes (must be 8..${MAX_STARTUP_PACKET_BYTES})`, { length: msgLen });
      }
      return msgLen - 4;
    }
    if (msgLen < 4) {
      throw new ProtocolError(`invalid message length ${msgLen} for message type ${messageTypeName(type)}`, { length: msgLen, type });
    }
    const bodyLen = msgLen - 4;
    const max = this.#opts.maxBodyBytes(type);
    if (bodyLen > max) {
      throw new ProtocolError(`message type ${messageTypeName(type)} of ${bodyLen} bytes exceeds the limit of ${max} bytes`, { length: msgLen, type, limit: max }, '54000');
    }
    return bodyLen;
  }
}

const EMPTY = Buffer.alloc(0);

// ---------------------------------------------------------------------------------------------
// Frontend decoders

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Reads NUL-terminated strings and integers from a message body; throws ProtocolError past the end. */
export class BodyReader {
  readonly buf: Buffer;
  offset: number;

  constructor(buf: Buffer, offset = 0) {
    this.buf = buf;
    this.offset = offset;
  }

  get remaining(): number {
    return this.buf.length - this.offset;
  }

  int32(): number {
    if (this.remaining < 4) throw new ProtocolError('message too short: expected a 4-byte integer', { offset: this.offset });
    const v = this.buf.readInt32BE(this.offset);
    this.offset += 4;
    return v;
  }

  /** A NUL-terminated UTF-8 string. Invalid UTF-8 is a ProtocolError with SQLSTATE 22021. */
  cstring(): string {
    const end = this.buf.indexOf(0, this.offset);
    if (end < 0) throw new ProtocolError('invalid string in message: no terminating NUL byte', { offset: this.offset });
    const s = decodeUtf8(this.buf, this.offset, end);
    this.offset = end + 1;
    return s;
  }

  rest(): Buffer {
    const b = this.buf.subarray(this.offset);
    this.offset = this.buf.length;
    return b;
  }
}

export function decodeUtf8(buf: Buffer, start: number, end: number): string {
  try {
    return UTF8.decode(buf.subarray(start, end));
  } catch {
    throw new ProtocolError('invalid byte sequence for encoding "UTF8"', { offset: start }, '22021');
  }
}

export type StartupPacket =
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  | { kind: 'cancel'; processId: number; secretKey: number }
  | { kind: 'startup'; majorVersion: number; minorVersion: number; params: Map<string, string> };

/** Decodes the body of an untyped packet (after its length word). */
export function decodeStartupPacket(body: Buffer): StartupPacket {
  const r = new BodyReader(body);
  const code = r.int32();
  if (code === SSL_REQUEST_CODE) {
    if (body.length !== 4) throw new ProtocolError(`invalid SSLRequest length ${body.length + 4}`);
    return { kind: 'ssl' };
  }
  if (code === GSSENC_REQUEST_CODE) {
    if (body.length !== 4) throw new ProtocolError(`invalid GSSENCRequest length ${body.length + 4}`);
    return { kind: 'gssenc' };
  }
  if (code === CANCEL_REQUEST_CODE) {
    if (body.length !== 12) throw new ProtocolError(`invalid CancelRequest length ${body.length + 4}`);
    return { kind: 'cancel', processId: r.int32(), secretKey: r.int32() };
  }
  const majorVersion = code >>> 16;
  const minorVersion = code & 0xffff;
  if (majorVersion !== 3) {
    throw new ProtocolError(`unsupported frontend protocol ${majorVersion}.${minorVersion}: server supports 3.0`, { majorVersion, minorVersion }, '0A000');
  }
  const params = new Map<string, string>();
  // Bounded by the 10,000-byte packet limit: each pair consumes at least two bytes.
  for (;;) {
    if (r.remaining === 0) throw new ProtocolError('invalid startup packet layout: expected terminator as last byte');
    if (body[r.offset] === 0) {
      r.offset++;
      break;
    }
    const name = r.cstring();
    if (r.remaining === 0) throw new ProtocolError(`invalid startup packet layout: parameter "${name}" has no value`);
    const value = r.cstring();
    params.set(name, value);
  }
  if (r.remaining !== 0) throw new ProtocolError('invalid startup packet layout: bytes after the terminator');
  return { kind: 'startup', majorVersion, minorVersion, params };
}

/** The query string of a 'Q' message. */
export function decodeQuery(body: Buffer): string {
  const end = body.indexOf(0);
  if (end !== body.length - 1) throw new ProtocolError('invalid Query message: the string must be NUL-terminated and be the whole body');
  return decodeUtf8(body, 0, end);
}

/** The error message of a CopyFail ('f'). */
export function decodeCopyFail(body: Buffer): string {
  const end = body.indexOf(0);
  if (end < 0) return decodeUtf8(body, 0, body.length);
  return decodeUtf8(body, 0, end);
}

// ---------------------------------------------------------------------------------------------
// Backend encoder

export interface ColumnDescription {
  name: string;
  typeOid: number;
  /** typlen; default from the type (−1 for variable-length and unknown types). */
  typeLen?: number;
  typeModifier?: number;
}

/** Fields of an ErrorResponse/NoticeResponse, by protocol field code. */
export interface ErrorFields {
  /** Localised severity ('S') and non-localised ('V'): ERROR, FATAL, PANIC, WARNING, NOTICE, ... */
  severity: string;
  /** SQLSTATE, five characters. */
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

const INITIAL_WRITER_BYTES = 8 * 1024;

/**
 * Accumulates backend messages. Each encoder writes type byte, a placeholder length, the fields, and
 * patches the length. take() hands the bytes over and starts a new buffer on the next write.
 */
export class BackendWriter {
  #buf: Buffer = EMPTY;
  #len = 0;

  /** Bytes accumulated since the last take(). */
  get length(): number {
    return this.#len;
  }

  /** The accumulated bytes (null when empty). The writer never touches them again. */
  take(): Buffer | null {
    if (this.#len === 0) return null;
    const out = this.#buf.subarray(0, this.#len);
    this.#buf = EMPTY;
    this.#len = 0;
    return out;
  }

  #ensure(n: number): void {
    if (this.#buf.length - this.#len >= n) return;
    const grown = Math.max(INITIAL_WRITER_BYTES, this.#buf.length + (this.#buf.length >> 1), this.#len + n);
    const next = Buffer.allocUnsafe(grown);
    if (this.#len > 0) this.#buf.copy(next, 0, 0, this.#len);
    this.#buf = next;
  }

  /** Starts a message; returns the offset of its length word. Reserves `bodyHint` bytes. */
  #begin(type: number, bodyHint: number): number {
    this.#ensure(5 + bodyHint);
    this.#buf[this.#len] = type;
    const lenPos = this.#len + 1;
    this.#len += 5;
    return lenPos;
  }

  #end(lenPos: number): void {
    this.#buf.writeInt32BE(this.#len - lenPos, lenPos);
  }

  #int8(v: number): void {
    this.#ensure(1);
    this.#buf[this.#len++] = v & 0xff;
  }

  #int16(v: number): void {
    this.#ensure(2);
    this.#buf.writeInt16BE(v, this.#len);
    this.#len += 2;
  }

  #int32(v: number): void {
    this.#ensure(4);
    this.#buf.writeInt32BE(v | 0, this.#len);
    this.#len += 4;
  }

  #cstring(s: string): void {
    const n = Buffer.byteLength(s, 'utf8');
    this.#ensure(n + 1);
    this.#buf.write(s, this.#len, n, 'utf8');
    this.#len += n;
    this.#buf[this.#len++] = 0;
  }

  #bytes(b: Uint8Array): void {
    this.#ensure(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
  }

  authentication(code: number, data?: Uint8Array): void {
    const p = this.#begin(BackendMessage.Authentication, 4 + (data?.length ?? 0));
    this.#int32(code);
    if (data !== undefined) this.#bytes(data);
    this.#end(p);
  }

  /** AuthenticationSASL: the list of mechanism names. */
  authenticationSasl(mechanisms: readonly string[]): void {
    const p = this.#begin(BackendMessage.Authentication, 64);
    this.#int32(AuthRequest.SASL);
    for (const m of mechanisms) this.#cstring(m);
    this.#int8(0);
    this.#end(p);
  }

  parameterStatus(name: string, value: string): void {
    const p = this.#begin(BackendMessage.ParameterStatus, name.length + value.length + 2);
    this.#cstring(name);
    this.#cstring(value);
    this.#end(p);
  }

  backendKeyData(processId: number, secretKey: number): void {
    const p = this.#begin(BackendMessage.BackendKeyData, 8);
    this.#int32(processId);
    this.#int32(secretKey);
    this.#end(p);
  }

  /** status: 'I' idle, 'T' in transaction, 'E' failed transaction. */
  readyForQuery(status: 'I' | 'T' | 'E' = 'I'): void {
    const p = this.#begin(BackendMessage.ReadyForQuery, 1);
    this.#int8(status.charCodeAt(0));
    this.#end(p);
  }

  rowDescription(columns: readonly ColumnDescription[]): void {
    const p = this.#begin(BackendMessage.RowDescription, 2 + columns.length * 24);
    this.#int16(columns.length);
    for (const c of columns) {
      this.#cstring(c.name);
      this.#int32(0); // table OID
      this.#int16(0); // column attribute number
      this.#int32(c.typeOid);
      this.#int16(c.typeLen ?? TYPE_LENGTH.get(c.typeOid) ?? -1);
      this.#int32(c.typeModifier ?? -1);
      this.#int16(0); // text format
    }
    this.#end(p);
  }

  /** A row of text values (null = SQL NULL). One size pass, then one write pass; no temporaries. */
  dataRow(values: readonly (string | null)[]): void {
    let size = 2;
    for (const v of values) size += 4 + (v === null ? 0 : Buffer.byteLength(v, 'utf8'));
    const p = this.#begin(BackendMessage.DataRow, size);
    const buf = this.#buf;
    let off = this.#len;
    buf.writeInt16BE(values.length, off);
    off += 2;
    for (const v of values) {
      if (v === null) {
        buf.writeInt32BE(-1, off);
        off += 4;
        continue;
      }
      const n = buf.write(v, off + 4, 'utf8');
      buf.writeInt32BE(n, off);
      off += 4 + n;
    }
    this.#len = off;
    this.#end(p);
  }

  commandComplete(tag: string): void {
    const p = this.#begin(BackendMessage.CommandComplete, tag.length + 1);
    this.#cstring(tag);
    this.#end(p);
  }

  emptyQueryResponse(): void {
    this.#end(this.#begin(BackendMessage.EmptyQueryResponse, 0));
  }

  #errorOrNotice(type: number, f: ErrorFields): void {
    const p = this.#begin(type, 64 + f.message.length);
    const field = (code: string, value: string | undefined): void => {
      if (value === undefined) return;
      this.#int8(code.charCodeAt(0));
      this.#cstring(value);
    };
    field('S', f.severity);
    field('V', f.severity);
    field('C', f.code);
    field('M', f.message);
    field('D', f.detail);
    field('H', f.hint);
    this.#int8(0);
    this.#end(p);
  }

  errorResponse(f: ErrorFields): void {
    this.#errorOrNotice(BackendMessage.ErrorResponse, f);
  }

  noticeResponse(f: ErrorFields): void {
    this.#errorOrNotice(BackendMessage.NoticeResponse, f);
  }

  /** CopyInResponse / CopyOutResponse / CopyBothResponse: overall format (0 text, 1 binary) and per-column formats. */
  copyResponse(type: 'in' | 'out' | 'both', format: 0 | 1, columnFormats: readonly number[] = []): void {
    const code = type === 'in' ? BackendMessage.CopyInResponse : type === 'out' ? BackendMessage.CopyOutResponse : BackendMessage.CopyBothResponse;
    const p = this.#begin(code, 3 + 2 * columnFormats.length);
    this.#int8(format);
    this.#int16(columnFormats.length);
    for (const f of columnFormats) this.#int16(f);
    this.#end(p);
  }

  /** A whole CopyData message, payload copied into the buffer (use for small payloads). */
  copyData(payload: Uint8Array): void {
    const p = this.#begin(BackendMessage.CopyData, payload.length);
    this.#bytes(payload);
    this.#end(p);
  }

  /** Only the 5-byte header of a CopyData message; the caller sends the payload itself right after. */
  copyDataHeader(payloadBytes: number): void {
    this.#ensure(5);
    this.#buf[this.#len] = BackendMessage.CopyData;
    this.#buf.writeInt32BE(payloadBytes + 4, this.#len + 1);
    this.#len += 5;
  }

  copyDone(): void {
    this.#end(this.#begin(BackendMessage.CopyDone, 0));
  }

  negotiateProtocolVersion(newestMinor: number, unrecognized: readonly string[]): void {
    const p = this.#begin(BackendMessage.NegotiateProtocolVersion, 8);
    this.#int32((3 << 16) | newestMinor);
    this.#int32(unrecognized.length);
    for (const o of unrecognized) this.#cstring(o);
    this.#end(p);
  }
}
