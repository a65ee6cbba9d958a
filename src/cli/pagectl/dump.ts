/**
 * `pagectl layer dump`: verify a whole layer file first (every CRC, every value decoded, the summary
 * against the entries), then stream one line per entry in bounded memory.
 */
import path from 'node:path';
import type { Writable } from 'node:stream';
import { formatLsn, formatLsnPadded } from '../../postgres/lsn.ts';
import { recordTypeName, rmgrName } from '../../postgres/rmgr.ts';
import { SIZE_OF_XLOG_RECORD } from '../../postgres/walformat.ts';
import { describeKey, isRelBlockKey, keyToHex, type Key } from '../../storage/key.ts';
import { ClogStatus, NO_BLOCK, decodeValue, describeValue, valueWillInit, type Value } from '../../storage/value.ts';
import { LayerCorruptionError, describeKeyForError, type LayerSummary } from '../../storage/layerfile/format.ts';
import { LayerFileReader, type LayerEntryRef } from '../../storage/layerfile/reader.ts';
import { LineWriter } from '../output.ts';
import { formatTimestampUs } from '../../pageserver/timeline/lsntime.ts';
import { PagectlError, idsFromLayerPath, lsnRangeText, openReader, statOrFail } from './common.ts';
import { plural } from './list.ts';

// ---------------------------------------------------------------------------------------------
// layer dump: values.

const CLOG_STATUS_NAMES: Record<number, string> = {
  [ClogStatus.inProgress]: 'in-progress', [ClogStatus.committed]: 'committed', [ClogStatus.aborted]: 'aborted', [ClogStatus.subCommitted]: 'sub-committed',
};
/** PostgreSQL timestamps count microseconds from 2000-01-01 00:00 UTC. */
/** Lists in JSON output are cut after this many items (the count is always given). */
const JSON_LIST_LIMIT = 64;

/** RFC 3339 with microseconds; a value no calendar can show (a corrupt trailer) prints raw. */
function pgTimestampText(us: bigint): string {
  try {
    return formatTimestampUs(us);
  } catch {
    return `${us}us`;
  }
}

function blockText(b: number): number | null {
  return b === NO_BLOCK ? null : b;
}

/** Fields of a stored WAL record's header (XLogRecord), or null when it is too short to hold one. */
function recordHeader(rec: Buffer): { totLen: number; xid: number; info: number; rmid: number } | null {
  if (rec.length < SIZE_OF_XLOG_RECORD) return null;
  return { totLen: rec.readUInt32LE(0), xid: rec.readUInt32LE(4), info: rec[16]!, rmid: rec[17]! };
}

export interface ValueDescription {
  kind: Value['kind'];
  text: string;
  json: Record<string, unknown>;
}

/** A dump line's value part, for a decoded value stored under `key`. */
export function describeLayerValue(key: Key, v: Value): ValueDescription {
  switch (v.kind) {
    case 'image': {
      const json: Record<string, unknown> = { kind: 'image', imageBytes: v.image.length };
      let text = `image ${v.image.length} bytes`;
      if (isRelBlockKey(key) && v.image.length === 8192) {
        // pd_lsn: two little-endian u32 halves (xlogid, xrecoff) at the start of the page header.
        const pageLsn = (BigInt(v.image.readUInt32LE(0)) << 32n) | BigInt(v.image.readUInt32LE(4));
        json['pageLsn'] = formatLsn(pageLsn);
        text += `, page LSN ${formatLsn(pageLsn)}`;
      }
      return { kind: v.kind, text, json };
    }
    case 'pgRecord': {
      const h = recordHeader(v.record);
      if (h === null) {
        return {
          kind: v.kind,
          text: `pgRecord start ${formatLsn(v.recordLsn)}: ${v.record.length} bytes, too short for a record header${v.willInit ? ', will init' : ''}`,
          json: { kind: 'pgRecord', recordLsn: formatLsn(v.recordLsn), recordBytes: v.record.length, willInit: v.willInit, problem: 'shorter than a record header' },
        };
      }
      const rmgr = rmgrName(h.rmid);
      const type = recordTypeName(h.rmid, h.info);
      return {
        kind: v.kind,
        text: `pgRecord ${rmgr}/${type} xid ${h.xid} start ${formatLsn(v.recordLsn)} len ${h.totLen}${v.willInit ? ' will-init' : ''}`,
        json: { kind: 'pgRecord', rmgr, type, xid: h.xid, recordLsn: formatLsn(v.recordLsn), recordBytes: v.record.length, willInit: v.willInit },
      };
    }
    case 'clogSetStatus': {
      const status = CLOG_STATUS_NAMES[v.status] ?? `status ${v.status}`;
      const n = v.xids.length;
      const xids = n === 0 ? 'no xids' : n === 1 ? `xid ${v.xids[0]}` : `${n} xids ${v.xids[0]}..${v.xids[n - 1]}`;
      const ts = v.timestampUs === null ? null : pgTimestampText(v.timestampUs);
      return {
        kind: v.kind,
        text: `clogSetStatus ${status} ${xids}${ts === null ? '' : ` at ${ts}`}`,
        json: { kind: 'clogSetStatus', status, xidCount: n, xids: v.xids.slice(0, JSON_LIST_LIMIT), timestamp: ts },
      };
    }
    case 'clearVmBits':
      return {
        kind: v.kind,
        text: `clearVmBits flags 0x${v.flags.toString(16)} new heap blk ${blockText(v.newHeapBlock) ?? '-'}, old heap blk ${blockText(v.oldHeapBlock) ?? '-'}`,
        json: { kind: 'clearVmBits', flags: v.flags, newHeapBlock: blockText(v.newHeapBlock), oldHeapBlock: blockText(v.oldHeapBlock) },
      };
    case 'multixactOffset':
      return {
        kind: v.kind,
        text: `multixactOffset ${describeValue(v)}`,
        json: { kind: 'multixactOffset', multi: v.multi, offset: v.offset, ...(v.next === undefined ? {} : { next: v.next }) },
      };
    case 'multixactMembers':
      return {
        kind: v.kind,
        text: `multixactMembers ${describeValue(v)}`,
        json: { kind: 'multixactMembers', startOffset: v.startOffset, memberCount: v.members.length, members: v.members.slice(0, JSON_LIST_LIMIT) },
      };
  }
}

// ---------------------------------------------------------------------------------------------
// layer dump: verification pass.

export interface LayerVerification {
  entries: number;
  keys: number;
  indexBlocks: number;
  valueBytes: number;
  valueKinds: Partial<Record<Value['kind'], number>>;
}

function corrupt(reader: LayerFileReader, what: string, ref: LayerEntryRef | null): LayerCorruptionError {
  const where = ref === null ? '' : ` at ${describeKeyForError(ref.key)} LSN ${formatLsn(ref.lsn)}`;
  return new LayerCorruptionError(`layer file ${reader.path}${where}: ${what}`, { path: reader.path, ...(ref === null ? {} : { key: keyToHex(ref.key), lsn: formatLsn(ref.lsn) }) });
}

/** Decodes an entry's value (already CRC-checked by readValue); a failure is corruption. */
function decodeEntryValue(reader: LayerFileReader, ref: LayerEntryRef, bytes: Buffer): Value {
  try {
    return decodeValue(bytes);
  } catch (err) {
    throw corrupt(reader, `value passed its CRC but does not decode: ${(err as Error).message}`, ref);
  }
}

/**
 * Reads the whole file as the pageserver could and checks it against its summary: every index
 * block (CRC, header, order: LayerFileReader.indexEntries), every value (CRC, decodes, agrees with
 * the entry's willInit flag), keys and LSNs inside the summary's ranges, one entry per key at the
 * image LSN for images, the entry and key counts, and values stored back to back in entry order
 * filling the values region exactly. Throws LayerCorruptionError on the first problem.
 */
export function verifyLayer(reader: LayerFileReader): LayerVerification {
  const s: LayerSummary = reader.summary;
  const result: LayerVerification = { entries: 0, keys: 0, indexBlocks: s.indexBlockCount, valueBytes: 0, valueKinds: {} };
  let prevKey: Key | null = null;
  let nextOffset = s.valuesOffset;
  for (const ref of reader.indexEntries()) {
    if (++result.entries > s.entryCount) throw corrupt(reader, `more index entries than the summary's ${s.entryCount}`, ref);
    if (ref.key < s.keyRange.start || ref.key >= s.keyRange.end) throw corrupt(reader, 'key outside the layer\'s key range', ref);
    if (ref.lsn < s.lsnRange.start || ref.lsn >= s.lsnRange.end) throw corrupt(reader, `LSN outside the layer's LSN range ${lsnRangeText(s.kind, s.lsnRange.start, s.lsnRange.end)}`, ref);
    if (ref.key !== prevKey) {
      result.keys++;
      prevKey = ref.key;
    } else if (s.kind === 'image') {
      throw corrupt(reader, 'an image layer holds two entries for one key', ref);
    }
    if (ref.offset !== nextOffset) throw corrupt(reader, `value at offset ${ref.offset}, expected ${nextOffset} (values are stored back to back in entry order)`, ref);
    nextOffset += ref.length;
    const bytes = reader.readValue(ref);
    const v = decodeEntryValue(reader, ref, bytes);
    if (valueWillInit(v) !== ref.willInit) throw corrupt(reader, `index willInit flag (${ref.willInit}) disagrees with the ${v.kind} value`, ref);
    result.valueBytes += ref.length;
    result.valueKinds[v.kind] = (result.valueKinds[v.kind] ?? 0) + 1;
  }
  if (result.entries !== s.entryCount) throw corrupt(reader, `the index holds ${result.entries} entries, the summary says ${s.entryCount}`, null);
  if (result.keys !== s.keyCount) throw corrupt(reader, `the index holds ${result.keys} distinct keys, the summary says ${s.keyCount}`, null);
  if (result.valueBytes !== s.valuesLengthBytes) throw corrupt(reader, `the entries' values add up to ${result.valueBytes} bytes, the summary's values region is ${s.valuesLengthBytes}`, null);
  return result;
}

// ---------------------------------------------------------------------------------------------
// layer dump: output.

export interface DumpOptions {
  json?: boolean;
  /** Print at most this many entries (the whole file is verified regardless). */
  limit?: number;
}

export interface PagectlStreams {
  stdout: Writable;
  stderr: { write(s: string): unknown };
}

function summaryJson(reader: LayerFileReader, v: LayerVerification): Record<string, unknown> {
  const s = reader.summary;
  return {
    type: 'layer',
    file: reader.path,
    formatVersion: s.formatVersion,
    kind: s.kind,
    tenantId: s.tenantId,
    timelineId: s.timelineId,
    keyStart: keyToHex(s.keyRange.start),
    keyEnd: keyToHex(s.keyRange.end),
    keyStartDescription: describeKey(s.keyRange.start),
    keyEndDescription: describeKey(s.keyRange.end),
    lsnStart: formatLsn(s.lsnRange.start),
    lsnEnd: formatLsn(s.lsnRange.end),
    sizeBytes: s.fileSizeBytes,
    entryCount: s.entryCount,
    keyCount: s.keyCount,
    index: { blocks: s.indexBlockCount, offset: s.indexOffset, lengthBytes: s.indexLengthBytes, fenceLengthBytes: s.fenceLengthBytes },
    values: { offset: s.valuesOffset, lengthBytes: s.valuesLengthBytes, kinds: v.valueKinds },
    checksums: { verified: true, summary: 1, fence: 1, indexBlocks: v.indexBlocks, values: v.entries },
  };
}

function summaryText(reader: LayerFileReader, v: LayerVerification): string[] {
  const s = reader.summary;
  const kinds = Object.entries(v.valueKinds).map(([k, n]) => `${k} ${n}`).join(', ');
  const rows: [string, string][] = [
    ['layer file', reader.path],
    ['format version', String(s.formatVersion)],
    ['kind', s.kind],
    ['tenant', s.tenantId],
    ['timeline', s.timelineId],
    ['key range', `${keyToHex(s.keyRange.start)}-${keyToHex(s.keyRange.end)} (${describeKey(s.keyRange.start)} .. ${describeKey(s.keyRange.end)}, end exclusive)`],
    ['LSN range', s.kind === 'image' ? `${formatLsn(s.lsnRange.start)} (image)` : lsnRangeText(s.kind, s.lsnRange.start, s.lsnRange.end)],
    ['size', `${s.fileSizeBytes} bytes`],
    ['entries', `${s.entryCount} (${plural(s.keyCount, 'distinct key')})`],
    ['values', `${s.valuesLengthBytes} bytes at offset ${s.valuesOffset}${kinds === '' ? '' : `: ${kinds}`}`],
    ['index', `${plural(s.indexBlockCount, 'block')} of 8192 bytes at offset ${s.indexOffset}, fence ${s.fenceLengthBytes} bytes at offset ${s.fenceOffset}`],
    ['checksums', `verified: summary, fence, ${plural(v.indexBlocks, 'index block')}, ${plural(v.entries, 'value')}`],
  ];
  return rows.map(([k, val]) => `${k.padEnd(15)} ${val}`);
}

/**
 * `pagectl layer dump`: verifies the whole file, then prints its summary and entries (streamed,
 * bounded memory). Returns the exit status; errors before the first output line write nothing.
 */
export async function runLayerDump(file: string, opts: DumpOptions, io: PagectlStreams): Promise<number> {
  const st = await statOrFail(file);
  if (st.isDirectory()) throw new PagectlError(`${file} is a directory, expected a layer file`, { path: file });
  const reader = openReader(file, idsFromLayerPath(file));
  try {
    const verified = verifyLayer(reader);
    const out = new LineWriter(io.stdout);
    const limit = opts.limit ?? Infinity;
    let printed = 0;
    try {
      const head = opts.json ? [JSON.stringify(summaryJson(reader, verified))] : [...summaryText(reader, verified), '', 'key                                  LSN          size  value  |  key description'];
      for (const line of head) await out.line(line);
      for (const ref of reader.indexEntries()) {
        if (printed >= limit || !out.open) break;
        const v = decodeEntryValue(reader, ref, reader.readValue(ref));
        const d = describeLayerValue(ref.key, v);
        const line = opts.json
          ? JSON.stringify({ type: 'entry', key: keyToHex(ref.key), keyDescription: describeKey(ref.key), lsn: formatLsn(ref.lsn), sizeBytes: ref.length, value: d.json })
          : `${keyToHex(ref.key)} ${formatLsnPadded(ref.lsn).padEnd(12)} ${String(ref.length).padStart(5)}  ${d.text}  |  ${describeKey(ref.key)}`;
        printed++;
        const p = out.line(line);
        if (p !== null) await p;
      }
      const rest = verified.entries - printed;
      if (opts.json) {
        await out.line(JSON.stringify({ type: 'end', entries: verified.entries, printed, truncated: rest > 0 }));
      } else if (rest > 0 && out.open) {
        await out.line(`... ${plural(rest, 'more entry', 'more entries')} not shown (--limit ${opts.limit ?? ''})`);
      }
    } finally {
      await out.end();
    }
    return 0;
  } finally {
    reader.close();
  }
}
