/**
 * Reading WAL from segment files.
 *
 * Segment files are named `TTTTTTTTXXXXXXXXYYYYYYYY` (timeline, segment number); their position in
 * the WAL comes from the name, their segment size from the first long page header. This module
 * lists the segments given as files or directories, orders them, and feeds them to the same
 * streaming decoder a replication connection uses, one fresh chunk at a time (chunks are never
 * reused, because decoded records may be views into them).
 *
 * The WAL read is one contiguous run: it stops (as a clean or unclean end, decided by the decoder)
 * at the first missing segment, and a file shorter than a segment ends the input there, so bytes of
 * two unrelated places are never glued together.
 */
import { open, readdir, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { InvalidInputError } from '../util/errors.ts';
import { formatLsn, type Lsn } from './lsn.ts';
import {
  DEFAULT_WAL_SEGMENT_SIZE, parseWalSegmentFileName, XLOG_PAGE_MAGIC, XLP_LONG_HEADER,
} from './walformat.ts';
import { WalStreamDecoder, type WalEnd, type WalStreamItem } from './walstream.ts';
import type { DecodedRecord } from './xlogrecord.ts';

export interface WalSegmentFile {
  path: string;
  timeline: number;
  segNo: bigint;
  sizeBytes: number;
}

/** Finds WAL segment files among files and directories; sorted by segment, highest timeline per segment. */
export async function listWalSegments(paths: string[], segmentSizeBytes: number): Promise<WalSegmentFile[]> {
  const found = new Map<bigint, WalSegmentFile>();
  const consider = async (path: string, explicit: boolean): Promise<void> => {
    const parsed = parseWalSegmentFileName(basename(path), segmentSizeBytes);
    if (parsed === null) {
      if (explicit) throw new InvalidInputError(`"${path}" is not named like a WAL segment file (24 hex digits, e.g. 000000010000000000000001)`, { path });
      return;
    }
    const st = await stat(path);
    if (!st.isFile()) return;
    const seg: WalSegmentFile = { path, timeline: parsed.timeline, segNo: parsed.segNo, sizeBytes: st.size };
    const have = found.get(parsed.segNo);
    if (have === undefined || have.timeline < seg.timeline) found.set(parsed.segNo, seg);
  };
  for (const p of paths) {
    let st;
    try {
      st = await stat(p);
    } catch (e) {
      throw new InvalidInputError(`cannot read "${p}": ${(e as Error).message}`, { path: p });
    }
    if (st.isDirectory()) {
      for (const name of (await readdir(p)).sort()) await consider(join(p, name), false);
    } else {
      await consider(p, true);
    }
  }
  return [...found.values()].sort((a, b) => (a.segNo < b.segNo ? -1 : a.segNo > b.segNo ? 1 : 0));
}

/** Reads the segment size from a file's first (long) page header; undefined if it has none. */
export async function detectSegmentSize(path: string): Promise<number | undefined> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(40);
    const { bytesRead } = await fh.read(buf, 0, 40, 0);
    if (bytesRead < 40) return undefined;
    if (buf.readUInt16LE(0) !== XLOG_PAGE_MAGIC || (buf.readUInt16LE(2) & XLP_LONG_HEADER) === 0) return undefined;
    return buf.readUInt32LE(32);
  } finally {
    await fh.close();
  }
}

export interface ScanWalOptions {
  /** First record to report: records before it are decoded (to find a record boundary) but not reported. */
  startLsn?: Lsn;
  /** Stop before the first record that ends after this LSN. */
  endLsn?: Lsn;
  /** Default: from the first file's long page header, else 16 MiB. */
  segmentSizeBytes?: number;
  systemId?: bigint;
  /** Bytes per read (default 1 MiB). */
  chunkSizeBytes?: number;
  /** Awaited after the records of each chunk were reported: lets a consumer apply backpressure. */
  afterChunk?: () => Promise<void> | null | void;
}

export interface ScanWalResult {
  /** How the scan ended: a decoder end, or 'end-lsn' when endLsn was reached. */
  end: WalEnd | { kind: 'end'; lsn: Lsn; code: 'end-lsn'; reason: string; clean: true };
  records: number;
  segments: WalSegmentFile[];
  segmentSizeBytes: number;
}

/**
 * Decodes the WAL in `paths` (files and directories), calling `onRecord` for each record in order.
 * Returns how the WAL ended. `onRecord` may return `false` to stop early.
 */
export async function scanWal(
  paths: string[],
  opts: ScanWalOptions,
  onRecord: (rec: DecodedRecord) => boolean | void,
): Promise<ScanWalResult> {
  let segSize = opts.segmentSizeBytes ?? DEFAULT_WAL_SEGMENT_SIZE;
  let segments = await listWalSegments(paths, segSize);
  if (opts.segmentSizeBytes === undefined && segments.length > 0) {
    // The names map to positions through the segment size: list again only if it is not the default.
    const detected = await detectSegmentSize(segments[0]!.path);
    if (detected !== undefined && detected !== segSize) {
      segSize = detected;
      segments = await listWalSegments(paths, segSize);
    }
  }
  if (segments.length === 0) throw new InvalidInputError(`no WAL segment files found in ${paths.join(', ')}`);
  const segBig = BigInt(segSize);
  const firstSegStart = segments[0]!.segNo * segBig;
  let startLsn = opts.startLsn ?? firstSegStart;
  const lastSeg = segments[segments.length - 1]!;
  if (startLsn < firstSegStart || startLsn >= (lastSeg.segNo + 1n) * segBig) {
    throw new InvalidInputError(`start ${formatLsn(startLsn)} is not inside the given WAL files (${formatLsn(firstSegStart)} .. ${formatLsn((lastSeg.segNo + 1n) * segBig)})`);
  }
  const reportFrom = startLsn;
  // Like pg_waldump: begin at the start of the page holding the start LSN and skip forward from there.
  startLsn -= startLsn % 8192n;
  const startSegNo = startLsn / segBig;
  const run = segments.filter((s) => s.segNo >= startSegNo);
  const chunkSize = opts.chunkSizeBytes ?? 1024 * 1024;
  const decoder = new WalStreamDecoder({ startLsn, segmentSizeBytes: segSize, ...(opts.systemId !== undefined ? { systemId: opts.systemId } : {}) });
  let records = 0;
  let stopped: ScanWalResult['end'] | null = null;

  const drain = (): WalEnd | null => {
    for (;;) {
      const item: WalStreamItem | null = decoder.next();
      if (item === null) return null;
      if (item.kind === 'end') return item;
      const rec = item.record;
      if (rec.lsn < reportFrom) continue;
      if (opts.endLsn !== undefined && rec.lsn + BigInt(rec.totLen) > opts.endLsn) {
        stopped = { kind: 'end', lsn: rec.lsn, code: 'end-lsn', reason: `reached the end LSN ${formatLsn(opts.endLsn)}`, clean: true };
        return null;
      }
      records++;
      if (onRecord(rec) === false) {
        stopped = { kind: 'end', lsn: rec.endLsn, code: 'end-lsn', reason: 'stopped by the caller', clean: true };
        return null;
      }
    }
  };

  let expectSegNo = startSegNo;
  let end: WalEnd | null = null;
  outer: for (const seg of run) {
    if (seg.segNo !== expectSegNo) break; // a gap: the input ends here
    if (seg.sizeBytes > segSize) {
      throw new InvalidInputError(`"${seg.path}" is ${seg.sizeBytes} bytes, larger than the WAL segment size ${segSize}`, { path: seg.path });
    }
    const fh = await open(seg.path, 'r');
    try {
      // Read ahead: the next chunk is read from disk while the current one is decoded.
      let filePos = seg.segNo === startSegNo ? Number(startLsn % segBig) : 0;
      const readAt = (at: number): Promise<Uint8Array> | null => {
        if (at >= seg.sizeBytes) return null;
        const want = Math.min(chunkSize, seg.sizeBytes - at);
        const buf = Buffer.allocUnsafe(want);
        return fh.read(buf, 0, want, at).then(({ bytesRead }) => buf.subarray(0, bytesRead));
      };
      let pendingRead = readAt(filePos);
      while (pendingRead !== null) {
        const chunk = await pendingRead;
        if (chunk.byteLength === 0) break;
        filePos += chunk.byteLength;
        pendingRead = readAt(filePos);
        decoder.push(chunk);
        end = drain();
        if (opts.afterChunk) await opts.afterChunk();
        if (end !== null || stopped !== null) {
          if (pendingRead !== null) await pendingRead; // do not close the file under a read in flight
          break outer;
        }
      }
    } finally {
      await fh.close();
    }
    expectSegNo++;
    if (seg.sizeBytes < segSize) break; // a short (truncated or .partial) file ends the input
  }
  if (end === null && stopped === null) {
    decoder.finish();
    end = drain();
  }
  const finalEnd = stopped ?? end;
  if (finalEnd === null) throw new Error('WAL scan ended without an end marker'); // unreachable: finish() always yields an end
  return { end: finalEnd, records, segments: run, segmentSizeBytes: segSize };
}

/** Convenience: all records as an array, plus how the WAL ended. For tests and tools, not hot paths. */
export async function readWalRecords(paths: string[], opts: ScanWalOptions = {}): Promise<{ records: DecodedRecord[]; end: ScanWalResult['end'] }> {
  const records: DecodedRecord[] = [];
  const r = await scanWal(paths, opts, (rec) => {
    records.push(rec);
  });
  return { records, end: r.end };
}
