/**
 * The pageserver's key space.
 *
 * Everything the pageserver stores about a PostgreSQL cluster — every relation block, every SLRU
 * page, relation sizes, directories of databases and relations, relmap files, two-phase state,
 * the control file and the running checkpoint — is a value under an 18-byte key, versioned by LSN.
 * The layout follows Neon's (see the Neon brief §1): six fields compared in order,
 *
 *     f1 u8 | f2 u32 | f3 u32 | f4 u32 | f5 u8 | f6 u32      (big-endian on disk: byte order = key order)
 *
 * Design choices:
 * - In memory a key is an 18-character **latin1 string** (each char is one byte, 0..255). JS
 *   compares such strings code unit by code unit, which is exactly byte order, so `<` orders keys,
 *   and a key can be a `Map` key with no extra encoding. Turning it into bytes for a file is a
 *   `Buffer.write(key, 'latin1')`.
 * - Things read together sit together: a relation's size key (f6 = 0xFFFFFFFF) sorts right after
 *   its last block, a database's relmap and relation directory sort before its relations.
 * - Only the two built-in tablespaces are expected (1663 pg_default, 1664 pg_global), as in Neon.
 *   Keys do not forbid others; nothing in this module depends on it.
 *
 * Key ranges are half-open: [start, end).
 */
import { InvalidInputError, assert } from '../util/errors.ts';

declare const keyBrand: unique symbol;
/** An 18-byte key as an 18-char latin1 string (see the module comment). */
export type Key = string & { readonly [keyBrand]: true };

export const KEY_SIZE_BYTES = 18;

export interface KeyFields {
  f1: number;
  f2: number;
  f3: number;
  f4: number;
  f5: number;
  f6: number;
}

export interface KeyRange {
  /** Inclusive. */
  start: Key;
  /** Exclusive. */
  end: Key;
}

const U32_MAX = 0xffff_ffff;

function checkField(value: number, max: number, name: string): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new InvalidInputError(`key field ${name} out of range: ${value} (0..${max})`, { field: name, value });
  }
}

const ch = String.fromCharCode;

/** Builds a key from its six fields. */
export function makeKey(f1: number, f2: number, f3: number, f4: number, f5: number, f6: number): Key {
  checkField(f1, 0xff, 'f1');
  checkField(f2, U32_MAX, 'f2');
  checkField(f3, U32_MAX, 'f3');
  checkField(f4, U32_MAX, 'f4');
  checkField(f5, 0xff, 'f5');
  checkField(f6, U32_MAX, 'f6');
  return (ch(f1) +
    ch(f2 >>> 24, (f2 >>> 16) & 0xff, (f2 >>> 8) & 0xff, f2 & 0xff) +
    ch(f3 >>> 24, (f3 >>> 16) & 0xff, (f3 >>> 8) & 0xff, f3 & 0xff) +
    ch(f4 >>> 24, (f4 >>> 16) & 0xff, (f4 >>> 8) & 0xff, f4 & 0xff) +
    ch(f5) +
    ch(f6 >>> 24, (f6 >>> 16) & 0xff, (f6 >>> 8) & 0xff, f6 & 0xff)) as Key;
}

function u32At(k: string, at: number): number {
  return ((k.charCodeAt(at) << 24) | (k.charCodeAt(at + 1) << 16) | (k.charCodeAt(at + 2) << 8) | k.charCodeAt(at + 3)) >>> 0;
}

export function keyFields(k: Key): KeyFields {
  return { f1: k.charCodeAt(0), f2: u32At(k, 1), f3: u32At(k, 5), f4: u32At(k, 9), f5: k.charCodeAt(13), f6: u32At(k, 14) };
}

/** The last field (block number, xid, or 0xFFFFFFFF for size keys) without decoding the rest. */
export function keyField6(k: Key): number {
  return u32At(k, 14);
}

export const KEY_MIN: Key = '\x00'.repeat(KEY_SIZE_BYTES) as Key;
export const KEY_MAX: Key = '\xff'.repeat(KEY_SIZE_BYTES) as Key;

/** Checks that a string is a well-formed key (18 chars, each 0..255). */
export function isKey(s: string): s is Key {
  if (s.length !== KEY_SIZE_BYTES) return false;
  for (let i = 0; i < KEY_SIZE_BYTES; i++) if (s.charCodeAt(i) > 0xff) return false;
  return true;
}

export function compareKeys(a: Key, b: Key): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Writes the key's 18 bytes at `offset`. */
export function writeKey(k: Key, out: Buffer, offset: number): void {
  out.write(k, offset, KEY_SIZE_BYTES, 'latin1');
}

/** Reads a key from 18 bytes at `offset`. */
export function readKey(buf: Buffer, offset: number): Key {
  assert(offset + KEY_SIZE_BYTES <= buf.length, 'key read past end of buffer', { offset, length: buf.length });
  return buf.toString('latin1', offset, offset + KEY_SIZE_BYTES) as Key;
}

/** 36 upper-case hex digits, as in layer file names. */
export function keyToHex(k: Key): string {
  return Buffer.from(k, 'latin1').toString('hex').toUpperCase();
}

const KEY_HEX = /^[0-9A-Fa-f]{36}$/;

export function keyFromHex(hex: string): Key {
  if (!KEY_HEX.test(hex)) throw new InvalidInputError(`invalid key "${hex}": expected 36 hex digits`, { key: hex });
  return Buffer.from(hex, 'hex').toString('latin1', 0, KEY_SIZE_BYTES) as Key;
}

/** The key right after `k` (carry propagates towards f1). KEY_MAX has no successor. */
export function keyNext(k: Key): Key {
  const bytes = Buffer.from(k, 'latin1');
  for (let i = KEY_SIZE_BYTES - 1; i >= 0; i--) {
    if (bytes[i] !== 0xff) {
      bytes[i]!++;
      return bytes.toString('latin1', 0, KEY_SIZE_BYTES) as Key;
    }
    bytes[i] = 0;
  }
  throw new InvalidInputError('KEY_MAX has no next key');
}

export function keyRangeContains(range: KeyRange, k: Key): boolean {
  return k >= range.start && k < range.end;
}

export function keyRangesOverlap(a: KeyRange, b: KeyRange): boolean {
  return a.start < b.end && b.start < a.end;
}

// ---------------------------------------------------------------------------------------------
// Layout: what each part of the key space holds.

/** f1 values. */
export const KeyKind = {
  rel: 0x00,
  slru: 0x01,
  twoPhase: 0x02,
  misc: 0x03,
} as const;

/** SLRU kinds (f2 of SLRU keys), numbered as in Neon. */
export const SlruKind = {
  clog: 0,
  multixactMembers: 1,
  multixactOffsets: 2,
} as const;
export type SlruKind = (typeof SlruKind)[keyof typeof SlruKind];

export const SLRU_PAGES_PER_SEGMENT = 32;

/** Relation forks. */
export const ForkNumber = { main: 0, fsm: 1, vm: 2, init: 3 } as const;
export type ForkNumber = (typeof ForkNumber)[keyof typeof ForkNumber];
export const FORK_NAMES = ['main', 'fsm', 'vm', 'init'] as const;

/** A relation fork, as PostgreSQL's RelFileNode + ForkNumber. */
export interface RelTag {
  spcNode: number;
  dbNode: number;
  relNode: number;
  forkNum: number;
}

/** f6 of a size key. */
export const SIZE_F6 = 0xffff_ffff;

export const DBDIR_KEY: Key = makeKey(KeyKind.rel, 0, 0, 0, 0, 0);
export const TWOPHASEDIR_KEY: Key = makeKey(KeyKind.twoPhase, 0, 0, 0, 0, 0);
export const CONTROLFILE_KEY: Key = makeKey(KeyKind.misc, 0, 0, 0, 0, 0);
export const CHECKPOINT_KEY: Key = makeKey(KeyKind.misc, 0, 0, 0, 0, 1);

export function relMapFileKey(spcNode: number, dbNode: number): Key {
  return makeKey(KeyKind.rel, spcNode, dbNode, 0, 0, 0);
}

export function relDirKey(spcNode: number, dbNode: number): Key {
  return makeKey(KeyKind.rel, spcNode, dbNode, 0, 0, 1);
}

function checkRel(rel: RelTag): void {
  if (rel.relNode === 0) throw new InvalidInputError('relation keys need a non-zero relfilenode', { spc: rel.spcNode, db: rel.dbNode });
}

export function relBlockKey(rel: RelTag, blockNumber: number): Key {
  checkRel(rel);
  if (blockNumber === SIZE_F6) throw new InvalidInputError('block number 0xFFFFFFFF is not a valid block (it is the size key)');
  return makeKey(KeyKind.rel, rel.spcNode, rel.dbNode, rel.relNode, rel.forkNum, blockNumber);
}

export function relSizeKey(rel: RelTag): Key {
  checkRel(rel);
  return makeKey(KeyKind.rel, rel.spcNode, rel.dbNode, rel.relNode, rel.forkNum, SIZE_F6);
}

/** All keys of one relation fork: its blocks and its size. */
export function relKeyRange(rel: RelTag): KeyRange {
  checkRel(rel);
  return {
    start: makeKey(KeyKind.rel, rel.spcNode, rel.dbNode, rel.relNode, rel.forkNum, 0),
    end: rel.forkNum < 0xff
      ? makeKey(KeyKind.rel, rel.spcNode, rel.dbNode, rel.relNode, rel.forkNum + 1, 0)
      : keyNext(makeKey(KeyKind.rel, rel.spcNode, rel.dbNode, rel.relNode, 0xff, SIZE_F6)),
  };
}

/** Everything under one database: relmap, relation directory, all relations. */
export function dbDirKeyRange(spcNode: number, dbNode: number): KeyRange {
  const start = makeKey(KeyKind.rel, spcNode, dbNode, 0, 0, 0);
  return { start, end: keyNext(makeKey(KeyKind.rel, spcNode, dbNode, U32_MAX, 0xff, U32_MAX)) };
}

export function slruDirKey(kind: SlruKind): Key {
  return makeKey(KeyKind.slru, kind, 0, 0, 0, 0);
}

export function slruBlockKey(kind: SlruKind, segNo: number, blockNumber: number): Key {
  if (blockNumber >= SLRU_PAGES_PER_SEGMENT) {
    throw new InvalidInputError(`SLRU block ${blockNumber} out of range (a segment has ${SLRU_PAGES_PER_SEGMENT} pages)`, { segNo, blockNumber });
  }
  return makeKey(KeyKind.slru, kind, 1, segNo, 0, blockNumber);
}

export function slruSegmentSizeKey(kind: SlruKind, segNo: number): Key {
  return makeKey(KeyKind.slru, kind, 1, segNo, 0, SIZE_F6);
}

export function slruSegmentKeyRange(kind: SlruKind, segNo: number): KeyRange {
  return { start: makeKey(KeyKind.slru, kind, 1, segNo, 0, 0), end: makeKey(KeyKind.slru, kind, 1, segNo, 1, 0) };
}

export function twoPhaseFileKey(xid: number): Key {
  return makeKey(KeyKind.twoPhase, 0, 0, 0, 0, xid);
}

export function twoPhaseKeyRange(): KeyRange {
  return { start: makeKey(KeyKind.twoPhase, 0, 0, 0, 0, 0), end: makeKey(KeyKind.twoPhase + 1, 0, 0, 0, 0, 0) };
}

export function isRelBlockKey(k: Key): boolean {
  return k.charCodeAt(0) === KeyKind.rel && u32At(k, 9) !== 0 && u32At(k, 14) !== SIZE_F6;
}

export function isSlruBlockKey(k: Key): boolean {
  return k.charCodeAt(0) === KeyKind.slru && u32At(k, 5) === 1 && u32At(k, 14) !== SIZE_F6;
}

/** For a relation block key: its relation fork and block number. */
export function relBlockOfKey(k: Key): { rel: RelTag; blockNumber: number } {
  assert(isRelBlockKey(k), 'not a relation block key', { key: keyToHex(k) });
  const f = keyFields(k);
  return { rel: { spcNode: f.f2, dbNode: f.f3, relNode: f.f4, forkNum: f.f5 }, blockNumber: f.f6 };
}

const SLRU_NAMES = ['clog', 'multixact members', 'multixact offsets'];

/** A human description, for errors and `pagectl`: "rel 1663/5/16384 main blk 7", "clog seg 0 blk 3", … */
export function describeKey(k: Key): string {
  const f = keyFields(k);
  const hex = keyToHex(k);
  switch (f.f1) {
    case KeyKind.rel:
      if (f.f2 === 0 && f.f3 === 0 && f.f4 === 0 && f.f5 === 0 && f.f6 === 0) return 'db directory';
      if (f.f4 === 0 && f.f5 === 0 && f.f6 === 0) return `relmap ${f.f2}/${f.f3}`;
      if (f.f4 === 0 && f.f5 === 0 && f.f6 === 1) return `rel directory ${f.f2}/${f.f3}`;
      if (f.f4 !== 0) {
        const fork = FORK_NAMES[f.f5] ?? `fork${f.f5}`;
        const rel = `rel ${f.f2}/${f.f3}/${f.f4} ${fork}`;
        return f.f6 === SIZE_F6 ? `${rel} size` : `${rel} blk ${f.f6}`;
      }
      return `key ${hex}`;
    case KeyKind.slru: {
      const name = SLRU_NAMES[f.f2] ?? `slru${f.f2}`;
      if (f.f3 === 0 && f.f4 === 0 && f.f5 === 0 && f.f6 === 0) return `${name} directory`;
      if (f.f3 === 1 && f.f5 === 0) return f.f6 === SIZE_F6 ? `${name} seg ${f.f4} size` : `${name} seg ${f.f4} blk ${f.f6}`;
      return `key ${hex}`;
    }
    case KeyKind.twoPhase:
      return f.f6 === 0 && f.f2 === 0 && f.f3 === 0 && f.f4 === 0 && f.f5 === 0 ? 'twophase directory' : `twophase xid ${f.f6}`;
    case KeyKind.misc:
      if (k === CONTROLFILE_KEY) return 'control file';
      if (k === CHECKPOINT_KEY) return 'checkpoint';
      return `key ${hex}`;
    default:
      return `key ${hex}`;
  }
}
