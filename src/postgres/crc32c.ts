/**
 * CRC-32C (Castagnoli), the checksum PostgreSQL uses for WAL records, pg_control, relmap files
 * and two-phase state files, and the checksum Strata uses for its own on-disk formats.
 *
 * Two implementations behind one function, chosen by length, because WAL is mostly small records:
 *  - inputs of at least NATIVE_MIN_BYTES go to @node-rs/crc32 (prebuilt SIMD code, ~5 GB/s, but
 *    ~170 ns of call overhead);
 *  - shorter inputs use a table-driven JS loop (slicing-by-8), which beats the call overhead for
 *    record headers (20 bytes) and small records.
 * `crc32c(data, previous)` continues a running CRC, which WAL needs: a record's CRC covers its body
 * first and its header after. The returned value is final (already xor-ed), as PostgreSQL stores it.
 */
import { crc32c as nativeCrc32c } from '@node-rs/crc32';

const NATIVE_MIN_BYTES = 160;

/** Slicing-by-8 tables: T[k][b] is the CRC of byte b followed by k zero bytes. */
const T = buildTables();

function buildTables(): Uint32Array[] {
  const tables = Array.from({ length: 8 }, () => new Uint32Array(256));
  const t0 = tables[0]!;
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t0[n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) {
    let c = t0[n]!;
    for (let k = 1; k < 8; k++) {
      c = t0[c & 0xff]! ^ (c >>> 8);
      tables[k]![n] = c >>> 0;
    }
  }
  return tables;
}

const [T0, T1, T2, T3, T4, T5, T6, T7] = T as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];

/** Table-driven CRC-32C in JS. */
export function crc32cJs(data: Uint8Array, previous = 0): number {
  return crc32cJsRange(data, 0, data.length, previous);
}

/** Table-driven CRC-32C in JS over data[start, end), without making a view. */
export function crc32cJsRange(data: Uint8Array, start: number, end: number, previous = 0): number {
  let crc = ~previous >>> 0;
  let i = start;
  const n = end;
  const end8 = n - ((n - start) % 8);
  for (; i < end8; i += 8) {
    const a = (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24)) ^ crc;
    crc =
      T7[a & 0xff]! ^ T6[(a >>> 8) & 0xff]! ^ T5[(a >>> 16) & 0xff]! ^ T4[a >>> 24]! ^
      T3[data[i + 4]!]! ^ T2[data[i + 5]!]! ^ T1[data[i + 6]!]! ^ T0[data[i + 7]!]!;
  }
  for (; i < n; i++) crc = T0[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

/** CRC-32C of data[start, end): a view is made only when the native code is used. */
export function crc32cRange(data: Uint8Array, start: number, end: number, previous?: number): number {
  if (end - start < NATIVE_MIN_BYTES) return crc32cJsRange(data, start, end, previous ?? 0);
  return crc32c(data.subarray(start, end), previous);
}

export function crc32c(data: Uint8Array, previous?: number): number {
  if (data.length < NATIVE_MIN_BYTES) return crc32cJs(data, previous ?? 0);
  return (previous === undefined ? nativeCrc32c(data as Buffer) : nativeCrc32c(data as Buffer, previous)) >>> 0;
}
