/**
 * A streaming ustar (POSIX 1003.1-1988/2001 "ustar") writer and reader, with no npm dependency.
 *
 * Why: BASE_BACKUP ships a data directory as tar archives (pg_basebackup -Ft writes them to disk,
 * the protocol streams them in CopyData messages). Strata's basebackup writes one; tests read what
 * pg_basebackup and GNU tar write. Relation files are up to 1 GiB and a backup is far larger, so
 * neither side may hold a file, let alone the archive, in memory.
 *
 * Writer. Each entry is a 512-byte header followed by the content padded with zeros to a multiple
 * of 512; the archive ends with two zero blocks. Output goes to a sink callback; when the sink
 * returns a promise (a Writable waiting for 'drain', a socket), the writer awaits it before going
 * on, so back-pressure reaches the producer. File content chunks are handed to the sink as they are
 * (no copy). Numbers are octal text; a size needs at most 11 octal digits (8 GiB - 1), and larger
 * files are refused rather than written in an extension format. Paths longer than the 100-byte name
 * field are split at a '/' into the 155-byte prefix field and the name field; a path that cannot
 * be split that way is refused. Entries: files 0600, directories 0700, uid/gid 0, owner names empty.
 * The writer is a state machine (idle → in a file → idle …, → finished): calls must be awaited one
 * at a time, and a file begun with beginFile() must get exactly the declared number of bytes.
 *
 * Reader. `readTar(source)` is an async generator over entries. An entry's content is read lazily
 * from the source by `entry.content()` (an async iterable of Buffers, views into the source chunks
 * where possible); whatever the caller does not read is skipped when it asks for the next entry, and
 * the content cannot be read after that. So memory stays bounded by the source's chunk size.
 * It understands: ustar and GNU magic, the prefix field (POSIX magic only), pax extended headers
 * ('x': path, linkpath, size; 'g' is skipped), GNU long names ('L', 'K'), GNU base-256 numbers,
 * and the v7 layout without magic. Every header checksum is verified (unsigned or signed byte sum,
 * as POSIX and historic implementations compute it). The archive ends at a zero block or at the
 * end of input between entries — PostgreSQL 15 servers send archives without the two zero blocks
 * and pg_basebackup appends them. Input that ends inside a header or inside an entry's content, a
 * bad checksum, or an unparsable / too large number is a TarFormatError naming the entry and byte
 * offset.
 */
import type { Writable } from 'node:stream';
import { InvalidInputError, StrataError, type ErrorContext } from '../util/errors.ts';

export const TAR_BLOCK_SIZE = 512;
/** Largest size an 11-digit octal size field holds (8 GiB - 1). */
export const TAR_MAX_OCTAL_SIZE_BYTES = 8 * 1024 * 1024 * 1024 - 1;
const NAME_LEN = 100;
const PREFIX_LEN = 155;
/** Limit on pax / GNU long-name payloads we buffer in memory. */
const MAX_META_BYTES = 1024 * 1024;
/** Limit on metadata entries ('x', 'g', 'L', 'K') in a row before a real entry. */
const MAX_META_CHAIN = 16;

const ZERO_BLOCK = Buffer.alloc(TAR_BLOCK_SIZE);
const ZERO_BLOCKS_2 = Buffer.alloc(2 * TAR_BLOCK_SIZE);

/** A tar archive that cannot be read. */
export class TarFormatError extends StrataError {
  constructor(message: string, context: ErrorContext = {}) {
    super('tar_invalid', message, context);
    this.name = 'TarFormatError';
  }
}

/** The writer was used out of order, or a file got more or fewer bytes than declared. */
export class TarWriteError extends StrataError {
  constructor(message: string, context: ErrorContext = {}) {
    super('tar_write', message, context);
    this.name = 'TarWriteError';
  }
}

/** Where the writer's output goes. A returned promise is awaited before the writer continues. */
export type TarSink = (chunk: Buffer) => void | Promise<void>;

/** A sink that writes to a Node Writable and waits for 'drain' when its buffer is full. */
export function writableSink(stream: Writable): TarSink {
  return (chunk) => {
    if (stream.write(chunk)) return undefined;
    return new Promise<void>((resolve, reject) => {
      const onDrain = (): void => { cleanup(); resolve(); };
      const onError = (err: Error): void => { cleanup(); reject(err); };
      const onClose = (): void => { cleanup(); reject(new TarWriteError('the output stream closed while the tar writer waited for it to drain')); };
      const cleanup = (): void => {
        stream.off('drain', onDrain);
        stream.off('error', onError);
        stream.off('close', onClose);
      };
      stream.on('drain', onDrain);
      stream.on('error', onError);
      stream.on('close', onClose);
    });
  };
}

export interface TarEntryOptions {
  /** Modification time, Unix seconds. Default: the writer's mtimeSec. */
  mtimeSec?: number;
  /** Permission bits. Default 0600 for files, 0700 for directories, 0777 for symlinks. */
  mode?: number;
}

export interface TarWriterOptions {
  /** Default modification time of entries, Unix seconds. Default: the time the writer was created. */
  mtimeSec?: number;
}

type WriterState = 'idle' | 'file' | 'finished';

function writeOctal(h: Buffer, off: number, len: number, value: number, what: string, path: string): void {
  // len - 1 octal digits, then NUL.
  const digits = value.toString(8);
  if (!Number.isSafeInteger(value) || value < 0 || digits.length > len - 1) {
    throw new InvalidInputError(`tar: ${what} ${value} of "${path}" does not fit in ${len - 1} octal digits`, { path, [what]: value });
  }
  h.write(digits.padStart(len - 1, '0'), off, len - 1, 'latin1');
  h[off + len - 1] = 0;
}

/** Splits a path into ustar (prefix, name) byte fields; throws if it cannot. */
function splitPath(path: string): { name: Buffer; prefix: Buffer } {
  const bytes = Buffer.from(path, 'utf8');
  if (bytes.byteLength <= NAME_LEN) return { name: bytes, prefix: Buffer.alloc(0) };
  // The prefix ends at a '/' (not stored); choose the longest prefix that fits so the name is short.
  const maxSplit = Math.min(PREFIX_LEN, bytes.byteLength - 1);
  for (let i = maxSplit; i > 0; i--) {
    if (bytes[i] !== 0x2f) continue;
    const name = bytes.subarray(i + 1);
    if (name.byteLength === 0) continue;
    if (name.byteLength > NAME_LEN) break; // a shorter prefix only makes the name longer
    return { name, prefix: bytes.subarray(0, i) };
  }
  throw new InvalidInputError(`tar: path "${path}" (${bytes.byteLength} bytes) is too long for ustar: it needs a '/' splitting it into at most ${PREFIX_LEN} + ${NAME_LEN} bytes`, { path });
}

function checkPath(path: string): void {
  if (path.length === 0) throw new InvalidInputError('tar: empty path');
  if (path.includes('\0')) throw new InvalidInputError(`tar: path "${path.replace(/\0/g, '\\0')}" contains a NUL byte`, { path });
  if (path.startsWith('/')) throw new InvalidInputError(`tar: path "${path}" is absolute; archive paths are relative`, { path });
  if (path.split('/').includes('..')) throw new InvalidInputError(`tar: path "${path}" contains "..", which would escape the extraction directory`, { path });
}

/** POSIX header checksum: the unsigned byte sum with the checksum field counted as 8 spaces. */
function headerChecksums(h: Uint8Array): { unsigned: number; signed: number } {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < TAR_BLOCK_SIZE; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += b;
    signed += b >= 128 ? b - 256 : b;
  }
  return { unsigned, signed };
}

/** Builds a ustar header block. */
export function encodeTarHeader(fields: {
  path: string;
  typeFlag: string;
  sizeBytes: number;
  mode: number;
  mtimeSec: number;
  linkName?: string;
}): Buffer {
  const { path } = fields;
  const h = Buffer.alloc(TAR_BLOCK_SIZE);
  const { name, prefix } = splitPath(path);
  name.copy(h, 0);
  writeOctal(h, 100, 8, fields.mode & 0o7777, 'mode', path);
  writeOctal(h, 108, 8, 0, 'uid', path);
  writeOctal(h, 116, 8, 0, 'gid', path);
  writeOctal(h, 124, 12, fields.sizeBytes, 'size', path);
  writeOctal(h, 136, 12, Math.floor(fields.mtimeSec), 'mtime', path);
  h.write(fields.typeFlag, 156, 1, 'latin1');
  if (fields.linkName !== undefined) {
    const link = Buffer.from(fields.linkName, 'utf8');
    if (link.byteLength > NAME_LEN) throw new InvalidInputError(`tar: link target of "${path}" is ${link.byteLength} bytes, more than the ${NAME_LEN} ustar allows`, { path });
    link.copy(h, 157);
  }
  h.write('ustar\0', 257, 6, 'latin1');
  h.write('00', 263, 2, 'latin1');
  writeOctal(h, 329, 8, 0, 'devmajor', path);
  writeOctal(h, 337, 8, 0, 'devminor', path);
  prefix.copy(h, 345);
  // Checksum: six octal digits, NUL, space.
  const sum = headerChecksums(h).unsigned;
  h.write(sum.toString(8).padStart(6, '0'), 148, 6, 'latin1');
  h[154] = 0;
  h[155] = 0x20;
  return h;
}

/** Streaming ustar writer; see the module comment. */
export class TarWriter {
  readonly #sink: TarSink;
  readonly #mtimeSec: number;
  #state: WriterState = 'idle';
  #busy = false;
  #bytesWritten = 0;
  // The file being written with beginFile().
  #filePath = '';
  #fileSizeBytes = 0;
  #fileWrittenBytes = 0;

  constructor(sink: TarSink, opts: TarWriterOptions = {}) {
    this.#sink = sink;
    this.#mtimeSec = opts.mtimeSec ?? Math.floor(Date.now() / 1000);
  }

  /** Bytes handed to the sink so far. */
  get bytesWritten(): number {
    return this.#bytesWritten;
  }

  async #emit(chunk: Buffer): Promise<void> {
    if (chunk.byteLength === 0) return;
    this.#bytesWritten += chunk.byteLength;
    const r = this.#sink(chunk);
    if (r !== undefined) await r;
  }

  /** Runs one operation; refuses overlapping calls (each call must be awaited before the next). */
  async #op<T>(what: string, expected: WriterState, fn: () => Promise<T>): Promise<T> {
    if (this.#busy) throw new TarWriteError(`tar: ${what} called while another writer call is still running (await each call)`);
    if (this.#state !== expected) {
      const where = this.#state === 'file' ? `inside file "${this.#filePath}" (${this.#fileWrittenBytes} of ${this.#fileSizeBytes} bytes written; call endFile())` : this.#state;
      throw new TarWriteError(`tar: ${what} is not allowed now: the writer is ${where}`, { state: this.#state });
    }
    this.#busy = true;
    try {
      return await fn();
    } finally {
      this.#busy = false;
    }
  }

  addDirectory(path: string, opts: TarEntryOptions = {}): Promise<void> {
    return this.#op(`addDirectory("${path}")`, 'idle', async () => {
      checkPath(path);
      const p = path.endsWith('/') ? path : path + '/';
      await this.#emit(encodeTarHeader({ path: p, typeFlag: '5', sizeBytes: 0, mode: opts.mode ?? 0o700, mtimeSec: opts.mtimeSec ?? this.#mtimeSec }));
    });
  }

  addSymlink(path: string, target: string, opts: TarEntryOptions = {}): Promise<void> {
    return this.#op(`addSymlink("${path}")`, 'idle', async () => {
      checkPath(path);
      if (target.length === 0 || target.includes('\0')) throw new InvalidInputError(`tar: invalid symlink target for "${path}"`, { path });
      await this.#emit(encodeTarHeader({ path, typeFlag: '2', sizeBytes: 0, mode: opts.mode ?? 0o777, mtimeSec: opts.mtimeSec ?? this.#mtimeSec, linkName: target }));
    });
  }

  /** Adds a whole file held in memory. */
  addFile(path: string, data: Buffer | Uint8Array, opts: TarEntryOptions = {}): Promise<void> {
    return this.#op(`addFile("${path}")`, 'idle', async () => {
      checkPath(path);
      if (path.endsWith('/')) throw new InvalidInputError(`tar: file path "${path}" ends with '/'`, { path });
      const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      await this.#emit(encodeTarHeader({ path, typeFlag: '0', sizeBytes: buf.byteLength, mode: opts.mode ?? 0o600, mtimeSec: opts.mtimeSec ?? this.#mtimeSec }));
      await this.#emit(buf);
      await this.#pad(buf.byteLength);
    });
  }

  /** Starts a file whose content follows in write() calls; endFile() checks the size. */
  beginFile(path: string, sizeBytes: number, opts: TarEntryOptions = {}): Promise<void> {
    return this.#op(`beginFile("${path}")`, 'idle', async () => {
      checkPath(path);
      if (path.endsWith('/')) throw new InvalidInputError(`tar: file path "${path}" ends with '/'`, { path });
      if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0 || sizeBytes > TAR_MAX_OCTAL_SIZE_BYTES) {
        throw new InvalidInputError(`tar: size ${sizeBytes} of "${path}" is not an integer in [0, ${TAR_MAX_OCTAL_SIZE_BYTES}]`, { path, sizeBytes });
      }
      await this.#emit(encodeTarHeader({ path, typeFlag: '0', sizeBytes, mode: opts.mode ?? 0o600, mtimeSec: opts.mtimeSec ?? this.#mtimeSec }));
      this.#filePath = path;
      this.#fileSizeBytes = sizeBytes;
      this.#fileWrittenBytes = 0;
      this.#state = 'file';
    });
  }

  /** Appends content to the file begun with beginFile(). The chunk is passed to the sink as is. */
  write(chunk: Buffer | Uint8Array): Promise<void> {
    return this.#op('write()', 'file', async () => {
      if (this.#fileWrittenBytes + chunk.byteLength > this.#fileSizeBytes) {
        throw new TarWriteError(`tar: "${this.#filePath}" was declared as ${this.#fileSizeBytes} bytes, but ${this.#fileWrittenBytes + chunk.byteLength} were written`, { path: this.#filePath, sizeBytes: this.#fileSizeBytes });
      }
      this.#fileWrittenBytes += chunk.byteLength;
      await this.#emit(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    });
  }

  /** Finishes the file begun with beginFile(); throws if fewer bytes than declared were written. */
  endFile(): Promise<void> {
    return this.#op('endFile()', 'file', async () => {
      if (this.#fileWrittenBytes !== this.#fileSizeBytes) {
        throw new TarWriteError(`tar: "${this.#filePath}" was declared as ${this.#fileSizeBytes} bytes, but only ${this.#fileWrittenBytes} were written`, { path: this.#filePath, sizeBytes: this.#fileSizeBytes });
      }
      await this.#pad(this.#fileSizeBytes);
      this.#state = 'idle';
    });
  }

  /**
   * Ends the archive with two zero blocks (pass `{ endMarker: false }` to leave them out, as a
   * PostgreSQL 15 server does in BASE_BACKUP: pg_basebackup appends them itself).
   */
  finish(opts: { endMarker?: boolean } = {}): Promise<void> {
    return this.#op('finish()', 'idle', async () => {
      if (opts.endMarker !== false) await this.#emit(ZERO_BLOCKS_2);
      this.#state = 'finished';
    });
  }

  async #pad(sizeBytes: number): Promise<void> {
    const rem = sizeBytes % TAR_BLOCK_SIZE;
    if (rem !== 0) await this.#emit(ZERO_BLOCK.subarray(0, TAR_BLOCK_SIZE - rem));
  }
}

// ---------------------------------------------------------------------------------------------
// Reader

export type TarEntryType = 'file' | 'directory' | 'symlink' | 'other';

export interface TarEntry {
  /** Path as stored (pax / GNU long name applied), without a trailing '/'. */
  path: string;
  type: TarEntryType;
  /** The raw type flag ('0', '5', '2', '1', ...; '0' for an old NUL flag). */
  typeFlag: string;
  /** Bytes of content (0 for directories and links). */
  sizeBytes: number;
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  /** Link target for symlinks and hard links, else ''. */
  linkName: string;
  /** Byte offset of this entry's header in the archive (after any pax / GNU long-name entries). */
  headerOffset: number;
  /**
   * The content, read from the source as it is iterated. Must be consumed before moving to the next
   * entry; whatever is left is skipped then. Can be called once.
   */
  content(): AsyncIterable<Buffer>;
  /** Reads the whole content into one Buffer; throws if sizeBytes > maxBytes (default 64 MiB). */
  readAll(maxBytes?: number): Promise<Buffer>;
}

export interface ReadTarOptions {
  /** Throw when the input ends without the zero-block end marker. Default false. */
  requireEndMarker?: boolean;
  /** Refuse entries larger than this. Default Number.MAX_SAFE_INTEGER. */
  maxEntrySizeBytes?: number;
}

const DEFAULT_READ_ALL_MAX_BYTES = 64 * 1024 * 1024;

/** Pulls exact byte counts out of an async iterable of chunks, tracking the archive offset. */
class ByteSource {
  readonly #it: AsyncIterator<Uint8Array>;
  #chunk: Buffer = Buffer.alloc(0);
  #pos = 0;
  #done = false;
  /** Bytes consumed from the start of the archive. */
  offset = 0;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.#it = source[Symbol.asyncIterator]();
  }

  /** Makes sure some unread bytes are buffered; false at end of input. */
  async #fill(): Promise<boolean> {
    for (let guard = 0; this.#pos >= this.#chunk.byteLength; guard++) {
      if (this.#done) return false;
      const r = await this.#it.next();
      if (r.done === true) {
        this.#done = true;
        return false;
      }
      const c = r.value;
      this.#chunk = Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
      this.#pos = 0;
    }
    return true;
  }

  /** Up to n bytes: fewer only at end of input. One view when the bytes lie in one chunk. */
  async read(n: number): Promise<Buffer> {
    if (!(await this.#fill())) return Buffer.alloc(0);
    if (this.#chunk.byteLength - this.#pos >= n) {
      const out = this.#chunk.subarray(this.#pos, this.#pos + n);
      this.#pos += n;
      this.offset += n;
      return out;
    }
    const out = Buffer.alloc(n);
    let got = 0;
    while (got < n && (await this.#fill())) {
      const take = Math.min(n - got, this.#chunk.byteLength - this.#pos);
      this.#chunk.copy(out, got, this.#pos, this.#pos + take);
      this.#pos += take;
      got += take;
      this.offset += take;
    }
    return got === n ? out : out.subarray(0, got);
  }

  /** The next piece of at most n bytes (a view into a source chunk); empty at end of input. */
  async piece(n: number): Promise<Buffer> {
    if (!(await this.#fill())) return Buffer.alloc(0);
    const take = Math.min(n, this.#chunk.byteLength - this.#pos);
    const out = this.#chunk.subarray(this.#pos, this.#pos + take);
    this.#pos += take;
    this.offset += take;
    return out;
  }

  async close(): Promise<void> {
    if (!this.#done && typeof this.#it.return === 'function') {
      this.#done = true;
      await this.#it.return();
    }
  }
}

function fieldString(h: Uint8Array, off: number, len: number): string {
  const f = h.subarray(off, off + len);
  const nul = f.indexOf(0);
  return Buffer.from(f.buffer, f.byteOffset, nul < 0 ? len : nul).toString('utf8');
}

/** Parses a numeric field: octal text (space/NUL padded) or GNU base-256 (first byte 0x80). */
function parseNumber(h: Uint8Array, off: number, len: number, what: string, ctx: () => ErrorContext & { entry: string; offset: number }): number {
  const first = h[off]!;
  if (first === 0x80 || first === 0xff) {
    if (first === 0xff) {
      const c = ctx();
      throw new TarFormatError(`tar: negative base-256 ${what} in the header of "${c.entry}" at offset ${c.offset}`, c);
    }
    let v = 0n;
    for (let i = 1; i < len; i++) v = (v << 8n) | BigInt(h[off + i]!);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
      const c = ctx();
      throw new TarFormatError(`tar: ${what} ${v} in the header of "${c.entry}" at offset ${c.offset} is too large`, c);
    }
    return Number(v);
  }
  let i = off;
  const end = off + len;
  while (i < end && (h[i] === 0x20 || h[i] === 0)) i++; // leading spaces (and an empty field)
  let v = 0;
  let digits = 0;
  for (; i < end; i++) {
    const b = h[i]!;
    if (b >= 0x30 && b <= 0x37) {
      v = v * 8 + (b - 0x30);
      digits++;
      continue;
    }
    if (b === 0x20 || b === 0) break;
    const c = ctx();
    throw new TarFormatError(`tar: invalid ${what} field ${JSON.stringify(Buffer.from(h.subarray(off, end)).toString('latin1'))} in the header of "${c.entry}" at offset ${c.offset}`, c);
  }
  for (; i < end; i++) {
    if (h[i] !== 0x20 && h[i] !== 0) {
      const c = ctx();
      throw new TarFormatError(`tar: garbage after the ${what} number in the header of "${c.entry}" at offset ${c.offset}`, c);
    }
  }
  if (digits > 0 && !Number.isSafeInteger(v)) {
    const c = ctx();
    throw new TarFormatError(`tar: ${what} in the header of "${c.entry}" at offset ${c.offset} is too large`, c);
  }
  return v;
}

function isZeroBlock(b: Uint8Array): boolean {
  for (let i = 0; i < b.byteLength; i++) if (b[i] !== 0) return false;
  return true;
}

function typeOf(flag: string): TarEntryType {
  switch (flag) {
    case '0':
    case '7': // contiguous file: a regular file for readers
      return 'file';
    case '5':
      return 'directory';
    case '2':
      return 'symlink';
    default:
      return 'other';
  }
}

/** Parses pax extended header records: "<len> <key>=<value>\n". */
function parsePax(data: Buffer, ctx: ErrorContext & { entry: string; offset: number }): Map<string, string> {
  const out = new Map<string, string>();
  let pos = 0;
  for (let guard = 0; pos < data.byteLength; guard++) {
    if (guard > 100_000) throw new TarFormatError(`tar: too many pax records in the extended header at offset ${ctx.offset}`, ctx);
    if (data[pos] === 0) break; // trailing NUL padding written by some tools
    const sp = data.indexOf(0x20, pos);
    if (sp < 0) throw new TarFormatError(`tar: malformed pax record (no length) in the extended header at offset ${ctx.offset}`, ctx);
    const lenText = data.toString('latin1', pos, sp);
    const len = /^[0-9]+$/.test(lenText) ? Number(lenText) : NaN;
    if (!Number.isSafeInteger(len) || len <= sp - pos + 1 || pos + len > data.byteLength || data[pos + len - 1] !== 0x0a) {
      throw new TarFormatError(`tar: malformed pax record length "${lenText}" in the extended header at offset ${ctx.offset}`, ctx);
    }
    const record = data.subarray(sp + 1, pos + len - 1);
    const eq = record.indexOf(0x3d);
    if (eq < 0) throw new TarFormatError(`tar: malformed pax record (no '=') in the extended header at offset ${ctx.offset}`, ctx);
    out.set(record.toString('utf8', 0, eq), record.toString('utf8', eq + 1));
    pos += len;
  }
  return out;
}

/**
 * Reads a tar archive entry by entry; see the module comment. `source` is any async iterable of
 * byte chunks (a Node Readable, a CopyData stream, a generator).
 */
export async function* readTar(source: AsyncIterable<Uint8Array>, opts: ReadTarOptions = {}): AsyncGenerator<TarEntry, void, undefined> {
  const src = new ByteSource(source);
  const maxEntry = opts.maxEntrySizeBytes ?? Number.MAX_SAFE_INTEGER;
  // Content not yet consumed by the caller for the current entry, plus its padding.
  let pendingContent = 0;
  let pendingPadding = 0;
  let generation = 0;
  let currentName = '';

  const skip = async (n: number, what: string, headerOffset: number): Promise<void> => {
    let left = n;
    while (left > 0) {
      const p = await src.piece(left);
      if (p.byteLength === 0) {
        throw new TarFormatError(`tar: input ends inside ${what} of "${currentName}" (header at offset ${headerOffset}): ${left} bytes missing at offset ${src.offset}`, { entry: currentName, offset: src.offset });
      }
      left -= p.byteLength;
    }
  };
  const readMeta = async (size: number, entry: string, headerOffset: number): Promise<Buffer> => {
    if (size > MAX_META_BYTES) throw new TarFormatError(`tar: extended header "${entry}" at offset ${headerOffset} is ${size} bytes, more than the ${MAX_META_BYTES} we accept`, { entry, offset: headerOffset });
    const data = Buffer.from(await src.read(size)); // copy: it outlives the source chunk
    if (data.byteLength < size) throw new TarFormatError(`tar: input ends inside extended header "${entry}" (header at offset ${headerOffset}) at offset ${src.offset}`, { entry, offset: src.offset });
    const pad = (TAR_BLOCK_SIZE - (size % TAR_BLOCK_SIZE)) % TAR_BLOCK_SIZE;
    currentName = entry;
    await skip(pad, 'the padding', headerOffset);
    return data;
  };

  try {
    let pax = new Map<string, string>();
    let gnuLongName: string | undefined;
    let gnuLongLink: string | undefined;
    let metaChain = 0;
    for (;;) {
      const headerOffset = src.offset;
      const h = await src.read(TAR_BLOCK_SIZE);
      if (h.byteLength === 0) {
        if (metaChain > 0) throw new TarFormatError(`tar: input ends after an extended header, before the entry it describes (offset ${headerOffset})`, { entry: currentName, offset: headerOffset });
        if (opts.requireEndMarker === true) throw new TarFormatError(`tar: input ends at offset ${headerOffset} without the end-of-archive zero blocks`, { entry: currentName, offset: headerOffset });
        return;
      }
      if (h.byteLength < TAR_BLOCK_SIZE) {
        throw new TarFormatError(`tar: input ends inside an entry header at offset ${headerOffset} (${h.byteLength} of ${TAR_BLOCK_SIZE} bytes; previous entry "${currentName}")`, { entry: currentName, offset: headerOffset });
      }
      if (isZeroBlock(h)) {
        if (metaChain > 0) throw new TarFormatError(`tar: end-of-archive block at offset ${headerOffset} right after an extended header`, { entry: currentName, offset: headerOffset });
        return; // end of archive (the second zero block and any blocking padding are not read)
      }
      const rawName = fieldString(h, 0, NAME_LEN);
      const ctx = (): ErrorContext & { entry: string; offset: number } => ({ entry: rawName, offset: headerOffset });
      const stored = parseNumber(h, 148, 8, 'checksum', ctx);
      const sums = headerChecksums(h);
      if (stored !== sums.unsigned && stored !== sums.signed) {
        throw new TarFormatError(`tar: header checksum mismatch for "${rawName}" at offset ${headerOffset}: stored ${stored.toString(8)}, computed ${sums.unsigned.toString(8)} (octal)`, ctx());
      }
      const magic = Buffer.from(h.subarray(257, 263)).toString('latin1');
      const isPosix = magic === 'ustar\0';
      const typeFlag = h[156] === 0 ? '0' : String.fromCharCode(h[156]!);
      let sizeBytes = parseNumber(h, 124, 12, 'size', ctx);

      if (typeFlag === 'x' || typeFlag === 'g' || typeFlag === 'L' || typeFlag === 'K') {
        if (++metaChain > MAX_META_CHAIN) throw new TarFormatError(`tar: more than ${MAX_META_CHAIN} extended headers in a row at offset ${headerOffset}`, ctx());
        const data = await readMeta(sizeBytes, rawName, headerOffset);
        if (typeFlag === 'x') for (const [k, v] of parsePax(data, ctx())) pax.set(k, v);
        // 'g' (global pax headers) carry nothing we use; skipped.
        const nul = data.indexOf(0);
        const text = data.toString('utf8', 0, nul < 0 ? data.byteLength : nul);
        if (typeFlag === 'L') gnuLongName = text;
        if (typeFlag === 'K') gnuLongLink = text;
        continue;
      }

      let path = rawName;
      if (isPosix) {
        const prefix = fieldString(h, 345, PREFIX_LEN);
        if (prefix.length > 0) path = `${prefix}/${rawName}`;
      }
      if (gnuLongName !== undefined) path = gnuLongName;
      const paxPath = pax.get('path');
      if (paxPath !== undefined) path = paxPath;
      let linkName = gnuLongLink ?? fieldString(h, 157, NAME_LEN);
      const paxLink = pax.get('linkpath');
      if (paxLink !== undefined) linkName = paxLink;
      const paxSize = pax.get('size');
      if (paxSize !== undefined) {
        if (!/^[0-9]+$/.test(paxSize) || !Number.isSafeInteger(Number(paxSize))) throw new TarFormatError(`tar: invalid pax size "${paxSize}" for "${path}" at offset ${headerOffset}`, { entry: path, offset: headerOffset });
        sizeBytes = Number(paxSize);
      }
      const paxMtime = pax.get('mtime');
      const type = typeOf(typeFlag);
      // Links, directories, devices and FIFOs carry no content whatever the size field says (hard
      // links in pax archives may carry a size for the linked file; GNU and POSIX readers ignore it).
      const hasContent = type === 'file' || typeFlag === 'S' || (type === 'other' && !['1', '3', '4', '6'].includes(typeFlag));
      if (!hasContent) sizeBytes = 0;
      if (sizeBytes > maxEntry) throw new TarFormatError(`tar: entry "${path}" at offset ${headerOffset} is ${sizeBytes} bytes, more than the limit of ${maxEntry}`, { entry: path, offset: headerOffset });
      while (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1);
      pax = new Map();
      gnuLongName = undefined;
      gnuLongLink = undefined;
      metaChain = 0;
      currentName = path;

      const gen = ++generation;
      pendingContent = sizeBytes;
      pendingPadding = (TAR_BLOCK_SIZE - (sizeBytes % TAR_BLOCK_SIZE)) % TAR_BLOCK_SIZE;
      let contentStarted = false;
      const entryPath = path;
      const content = (): AsyncIterable<Buffer> => {
        if (contentStarted) throw new TarFormatError(`tar: content of "${entryPath}" was already read`, { entry: entryPath, offset: headerOffset });
        contentStarted = true;
        return {
          [Symbol.asyncIterator]: async function* (): AsyncGenerator<Buffer, void, undefined> {
            if (gen !== generation) throw new TarFormatError(`tar: content of "${entryPath}" is no longer available: the reader has moved on to the next entry`, { entry: entryPath, offset: headerOffset });
            while (pendingContent > 0) {
              if (gen !== generation) throw new TarFormatError(`tar: content of "${entryPath}" read after the reader moved on`, { entry: entryPath, offset: headerOffset });
              const p = await src.piece(pendingContent);
              if (p.byteLength === 0) {
                throw new TarFormatError(`tar: input ends inside the content of "${entryPath}" (header at offset ${headerOffset}): ${pendingContent} of ${sizeBytes} bytes missing at offset ${src.offset}`, { entry: entryPath, offset: src.offset });
              }
              pendingContent -= p.byteLength;
              yield p;
            }
          },
        };
      };
      const entry: TarEntry = {
        path,
        type,
        typeFlag,
        sizeBytes,
        mode: parseNumber(h, 100, 8, 'mode', ctx),
        uid: parseNumber(h, 108, 8, 'uid', ctx),
        gid: parseNumber(h, 116, 8, 'gid', ctx),
        mtimeSec: paxMtime !== undefined && Number.isFinite(Number(paxMtime)) ? Math.floor(Number(paxMtime)) : parseNumber(h, 136, 12, 'mtime', ctx),
        linkName,
        headerOffset,
        content,
        async readAll(maxBytes = DEFAULT_READ_ALL_MAX_BYTES): Promise<Buffer> {
          if (sizeBytes > maxBytes) throw new TarFormatError(`tar: "${entryPath}" is ${sizeBytes} bytes, more than readAll's limit of ${maxBytes}; stream it with content()`, { entry: entryPath, offset: headerOffset });
          const out = Buffer.alloc(sizeBytes);
          let got = 0;
          for await (const p of content()) {
            p.copy(out, got);
            got += p.byteLength;
          }
          return out;
        },
      };
      yield entry;
      // Skip what the caller did not read, then the padding.
      generation++;
      await skip(pendingContent, 'the content', headerOffset);
      pendingContent = 0;
      await skip(pendingPadding, 'the padding after the content', headerOffset);
      pendingPadding = 0;
    }
  } finally {
    await src.close();
  }
}
