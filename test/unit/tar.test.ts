/**
 * The ustar writer and reader, against each other and against GNU tar (an independent
 * implementation): GNU tar lists and extracts what we write (contents, modes, long paths in the
 * prefix field), we read what GNU tar writes in its gnu (long names as 'L' entries), posix (pax 'x'
 * headers) and ustar formats, and every kind of damage is a typed error naming the entry and
 * offset. pg_basebackup's archives are read in test/integration/basebackup-formats.test.ts.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import {
  encodeTarHeader, readTar, TAR_BLOCK_SIZE, TarFormatError, TarWriteError, TarWriter, writableSink, type ReadTarOptions, type TarEntry,
} from '../../src/postgres/tar.ts';
import { InvalidInputError } from '../../src/util/errors.ts';

const execFileP = promisify(execFile);
let work: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'strata-tar-test-'));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Deterministic pseudo-random bytes (xorshift), so contents differ per file and position. */
function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

async function writeArchive(fn: (w: TarWriter) => Promise<void>, mtimeSec = 1_700_000_000): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const w = new TarWriter((c) => { chunks.push(Buffer.from(c)); }, { mtimeSec });
  await fn(w);
  return Buffer.concat(chunks);
}

async function* chunked(buf: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let off = 0; off < buf.byteLength; off += size) yield buf.subarray(off, off + size);
}

interface ReadEntry {
  path: string;
  type: string;
  sizeBytes: number;
  mode: number;
  linkName: string;
  mtimeSec: number;
  data: Buffer;
}

async function readAllEntries(source: AsyncIterable<Uint8Array>, opts?: ReadTarOptions): Promise<ReadEntry[]> {
  const out: ReadEntry[] = [];
  for await (const e of readTar(source, opts)) {
    const data = await e.readAll();
    out.push({ path: e.path, type: e.type, sizeBytes: e.sizeBytes, mode: e.mode, linkName: e.linkName, mtimeSec: e.mtimeSec, data });
  }
  return out;
}

const LONG_DIR = 'base/' + 'd'.repeat(60) + '/' + 'e'.repeat(70); // 136 bytes
const LONG_FILE = `${LONG_DIR}/${'f'.repeat(90)}`; // 227 bytes: needs the prefix field

const FILES: [string, Buffer][] = [
  ['PG_VERSION', Buffer.from('15\n')],
  ['global/pg_control', bytes(8192, 1)],
  ['empty', Buffer.alloc(0)],
  ['one', Buffer.from('x')],
  ['b511', bytes(511, 2)],
  ['b512', bytes(512, 3)],
  ['b513', bytes(513, 4)],
  ['base/1/1259', bytes(100_000, 5)],
  ['name-of-exactly-100-bytes-' + 'n'.repeat(74), bytes(10, 6)],
  [LONG_FILE, bytes(777, 7)],
];

async function ourArchive(): Promise<Buffer> {
  return writeArchive(async (w) => {
    await w.addDirectory('base');
    await w.addDirectory('base/1/');
    await w.addDirectory('global', { mtimeSec: 1_600_000_000 });
    await w.addDirectory(LONG_DIR);
    for (const [p, d] of FILES) {
      if (p === 'base/1/1259') {
        // Streamed in uneven pieces.
        await w.beginFile(p, d.byteLength);
        for (let off = 0; off < d.byteLength; off += 7777) await w.write(new Uint8Array(d.subarray(off, off + 7777)));
        await w.endFile();
      } else {
        await w.addFile(p, d);
      }
    }
    await w.addSymlink('pg_tblspc/16400', '/some/where');
    await w.finish();
  });
}

test('writer output: block structure, headers and end marker', async () => {
  const tar = await ourArchive();
  assert.equal(tar.byteLength % TAR_BLOCK_SIZE, 0);
  assert.ok(tar.subarray(tar.byteLength - 1024).every((b) => b === 0), 'two zero blocks at the end');
  // First header: the directory "base/".
  const h = tar.subarray(0, 512);
  assert.equal(h.toString('latin1', 0, 5), 'base/');
  assert.equal(h.toString('latin1', 100, 108), '0000700\0');
  assert.equal(h.toString('latin1', 108, 116), '0000000\0');
  assert.equal(h.toString('latin1', 116, 124), '0000000\0');
  assert.equal(h.toString('latin1', 124, 136), '00000000000\0');
  assert.equal(h.toString('latin1', 136, 148), (1_700_000_000).toString(8).padStart(11, '0') + '\0');
  assert.equal(String.fromCharCode(h[156]!), '5');
  assert.equal(h.toString('latin1', 257, 265), 'ustar\u000000');
  // POSIX checksum: unsigned sum with the field as spaces, six octal digits, NUL, space.
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
  assert.equal(h.toString('latin1', 148, 156), sum.toString(8).padStart(6, '0') + '\0 ');
});

test('GNU tar lists and extracts what the writer produces', async () => {
  const tar = await ourArchive();
  const file = join(work, 'ours.tar');
  await writeFile(file, tar);
  const { stdout } = await execFileP('tar', ['-tvf', file, '--numeric-owner', '--full-time'], { env: { ...process.env, TZ: 'UTC' } });
  const lines = stdout.trim().split('\n');
  const find = (p: string): string => {
    const l = lines.find((x) => x.endsWith(` ${p}`));
    assert.ok(l !== undefined, `tar -tv lists ${p}:\n${stdout}`);
    return l;
  };
  assert.match(find('base/'), /^drwx------ 0\/0 +0 2023-11-14 22:13:20 base\/$/);
  assert.match(find('global/'), / 2020-09-13 12:26:40 global\/$/);
  assert.match(find('global/pg_control'), /^-rw------- 0\/0 +8192 /);
  assert.match(find(LONG_FILE), /^-rw------- 0\/0 +777 /);
  assert.match(find('base/1/1259'), / 100000 /);
  assert.match(lines.find((x) => x.includes('pg_tblspc/16400')) ?? '', /^lrwxrwxrwx 0\/0 .* pg_tblspc\/16400 -> \/some\/where$/);
  assert.equal(lines.length, 4 + FILES.length + 1);

  const dest = join(work, 'extract-ours');
  await mkdir(dest);
  await execFileP('tar', ['-xf', file, '-C', dest]);
  for (const [p, d] of FILES) {
    const got = await readFile(join(dest, p));
    assert.ok(got.equals(d), `content of ${p}`);
    assert.equal((await stat(join(dest, p))).mode & 0o777, 0o600, `mode of ${p}`);
  }
  assert.equal((await stat(join(dest, LONG_DIR))).mode & 0o777, 0o700);
  assert.equal((await stat(join(dest, 'global/pg_control'))).mtimeMs, 1_700_000_000_000);
});

test('reader: our archive in chunks of every awkward size', async () => {
  const tar = await ourArchive();
  for (const size of [1, 7, 511, 512, 513, 4096, 1 << 20]) {
    const entries = await readAllEntries(chunked(tar, size));
    const files = entries.filter((e) => e.type === 'file');
    assert.deepEqual(files.map((e) => e.path), FILES.map(([p]) => p), `chunk size ${size}`);
    for (const [i, [p, d]] of FILES.entries()) {
      assert.ok(files[i]!.data.equals(d), `content of ${p} (chunk size ${size})`);
      assert.equal(files[i]!.sizeBytes, d.byteLength);
      assert.equal(files[i]!.mode, 0o600);
      assert.equal(files[i]!.mtimeSec, 1_700_000_000);
    }
    const dirs = entries.filter((e) => e.type === 'directory');
    assert.deepEqual(dirs.map((e) => e.path), ['base', 'base/1', 'global', LONG_DIR]);
    assert.ok(dirs.every((d) => d.mode === 0o700));
    const links = entries.filter((e) => e.type === 'symlink');
    assert.deepEqual(links.map((e) => [e.path, e.linkName]), [['pg_tblspc/16400', '/some/where']]);
  }
});

test('reader: content streams in pieces no larger than the source chunks; unread content is skipped', async () => {
  const big = bytes(3 * 1024 * 1024 + 5, 9);
  const tar = await writeArchive(async (w) => {
    await w.addFile('big', big);
    await w.addFile('after', Buffer.from('after'));
    await w.finish();
  });
  const hash = createHash('sha256');
  let maxPiece = 0;
  let i = 0;
  for await (const e of readTar(chunked(tar, 65536))) {
    if (i++ === 0) {
      for await (const piece of e.content()) {
        maxPiece = Math.max(maxPiece, piece.byteLength);
        hash.update(piece);
      }
    } else {
      assert.equal((await e.readAll()).toString(), 'after');
    }
  }
  assert.equal(hash.digest('hex'), createHash('sha256').update(big).digest('hex'));
  assert.ok(maxPiece <= 65536, `largest piece ${maxPiece}`);

  // Not reading (or half reading) an entry's content: the next entry is still found.
  const seen: string[] = [];
  for await (const e of readTar(chunked(tar, 1000))) {
    seen.push(e.path);
    if (e.path === 'big') {
      for await (const piece of e.content()) {
        assert.ok(piece.byteLength > 0);
        break;
      }
    }
  }
  assert.deepEqual(seen, ['big', 'after']);

  // Content can be read once, and not after the reader moved on.
  let kept: TarEntry | undefined;
  for await (const e of readTar(chunked(tar, 1000))) {
    if (e.path === 'big') {
      kept = e;
      continue;
    }
    assert.ok(kept !== undefined);
    await assert.rejects(async () => { for await (const _ of kept!.content()) { /* nothing */ } }, /no longer available/);
    e.content();
    assert.throws(() => e.content(), /already read/);
    await assert.rejects(e.readAll(), /already read/);
  }
  // readAll refuses a file above its limit.
  for await (const e of readTar(chunked(tar, 1 << 20))) {
    if (e.path === 'big') await assert.rejects(e.readAll(1024), /more than readAll's limit/);
  }
});

test('writer: misuse and sizes are refused with typed errors', async () => {
  const w = new TarWriter(() => undefined);
  await assert.rejects(w.addFile('/abs', Buffer.alloc(1)), InvalidInputError);
  await assert.rejects(w.addFile('a/../b', Buffer.alloc(1)), InvalidInputError);
  await assert.rejects(w.addFile('', Buffer.alloc(1)), InvalidInputError);
  await assert.rejects(w.addFile('dir/', Buffer.alloc(1)), InvalidInputError);
  // No '/' that splits it into <= 155 + <= 100.
  await assert.rejects(w.addFile('x'.repeat(101), Buffer.alloc(1)), /too long for ustar/);
  await assert.rejects(w.addFile('p'.repeat(156) + '/name', Buffer.alloc(1)), /too long for ustar/);
  await assert.rejects(w.addFile('p'.repeat(100) + '/' + 'n'.repeat(101), Buffer.alloc(1)), /too long for ustar/);
  await assert.rejects(w.beginFile('huge', 8 * 1024 * 1024 * 1024), /not an integer in/);

  await w.beginFile('f', 10);
  await assert.rejects(w.addFile('g', Buffer.alloc(1)), TarWriteError);
  await assert.rejects(w.finish(), /inside file "f"/);
  await w.write(Buffer.alloc(6));
  await assert.rejects(w.write(Buffer.alloc(5)), /declared as 10 bytes, but 11 were written/);
  await assert.rejects(w.endFile(), /declared as 10 bytes, but only 6 were written/);
  await w.write(Buffer.alloc(4));
  await w.endFile();
  await assert.rejects(w.write(Buffer.alloc(1)), TarWriteError);
  await assert.rejects(w.endFile(), TarWriteError);
  // Overlapping calls are refused.
  const slow = new TarWriter(() => new Promise<void>((r) => setTimeout(r, 20)));
  const p1 = slow.addFile('a', Buffer.alloc(1));
  await assert.rejects(slow.addFile('b', Buffer.alloc(1)), /while another writer call is still running/);
  await p1;
  await slow.finish();
  await assert.rejects(slow.addDirectory('x'), /finished/);
  // 155 + '/' + 100 is the longest splittable path.
  const max = 'p'.repeat(155) + '/' + 'n'.repeat(100);
  const tar = await writeArchive(async (x) => { await x.addFile(max, Buffer.from('m')); await x.finish(); });
  const entries = await readAllEntries(chunked(tar, 512));
  assert.equal(entries[0]!.path, max);
});

test('writer: awaits the sink (back-pressure) and feeds a Writable through writableSink', async () => {
  const events: string[] = [];
  let pending = 0;
  const w = new TarWriter(async (c) => {
    assert.equal(pending, 0, 'the writer never calls the sink while a previous call is pending');
    pending++;
    events.push(`chunk ${c.byteLength}`);
    await new Promise((r) => setTimeout(r, 1));
    pending--;
  });
  await w.beginFile('f', 1000);
  await w.write(Buffer.alloc(600));
  await w.write(Buffer.alloc(400));
  await w.endFile();
  await w.finish();
  assert.deepEqual(events, ['chunk 512', 'chunk 600', 'chunk 400', 'chunk 24', 'chunk 1024']);
  assert.equal(w.bytesWritten, 512 + 1000 + 24 + 1024);

  // A PassThrough with a tiny buffer: the writer has to wait for 'drain' many times.
  const pt = new PassThrough({ highWaterMark: 1024 });
  const collected: Buffer[] = [];
  const consumer = (async () => {
    for await (const c of pt) {
      collected.push(c as Buffer);
      await new Promise((r) => setImmediate(r));
    }
  })();
  const data = bytes(200_000, 11);
  const w2 = new TarWriter(writableSink(pt), { mtimeSec: 1 });
  await w2.beginFile('big', data.byteLength);
  for (let off = 0; off < data.byteLength; off += 4096) await w2.write(data.subarray(off, off + 4096));
  await w2.endFile();
  await w2.finish();
  pt.end();
  await consumer;
  const entries = await readAllEntries(chunked(Buffer.concat(collected), 3000));
  assert.equal(entries.length, 1);
  assert.ok(entries[0]!.data.equals(data));
});

async function gnuTarTree(): Promise<{ dir: string; files: Map<string, Buffer> }> {
  const dir = join(work, 'gnu-src');
  const files = new Map<string, Buffer>();
  await mkdir(join(dir, 'sub', 'x'.repeat(120), 'y'.repeat(80)), { recursive: true });
  const add = async (p: string, d: Buffer): Promise<void> => {
    await writeFile(join(dir, p), d);
    await chmod(join(dir, p), 0o640);
    files.set(p, d);
  };
  await add('small', Buffer.from('hello\n'));
  await add('zero', Buffer.alloc(0));
  await add('big.bin', bytes(5 * 1024 * 1024 + 123, 13)); // big-ish, not a multiple of 512
  await add(`sub/${'x'.repeat(120)}/${'y'.repeat(80)}/file-with-a-long-path`, bytes(3000, 14)); // path > 100 chars, a component > 100
  await add(`sub/${'x'.repeat(120)}/short`, bytes(10, 15));
  return { dir, files };
}

for (const format of ['gnu', 'posix', 'ustar'] as const) {
  test(`reader: GNU tar --format=${format}`, async () => {
    const { dir, files } = await gnuTarTree();
    const file = join(work, `gnu-${format}.tar`);
    // A path component longer than 100 bytes cannot be stored in ustar at all; leave it out there.
    const members = format === 'ustar' ? ['small', 'zero', 'big.bin', `sub/${'x'.repeat(120)}/short`] : ['.'];
    await execFileP('tar', [`--format=${format}`, '-cf', file, '-C', dir, ...members]);
    const entries = await readAllEntries(createReadStream(file, { highWaterMark: 64 * 1024 }), { requireEndMarker: true });
    const got = new Map(entries.filter((e) => e.type === 'file').map((e) => [e.path.replace(/^\.\//, ''), e] as const));
    const expected = format === 'ustar' ? new Map([...files].filter(([p]) => members.includes(p))) : files;
    assert.deepEqual([...got.keys()].sort(), [...expected.keys()].sort());
    for (const [p, d] of expected) {
      const e = got.get(p)!;
      assert.ok(e.data.equals(d), `content of ${p}`);
      assert.equal(e.sizeBytes, d.byteLength);
      assert.equal(e.mode & 0o777, 0o640);
    }
    // Our reader lists the same names as GNU tar.
    const { stdout } = await execFileP('tar', ['-tf', file]);
    const theirs = stdout.trim().split('\n').map((l) => l.replace(/\/$/, ''));
    assert.deepEqual(entries.map((e) => e.path), theirs);
    if (format !== 'ustar') assert.ok(entries.some((e) => e.type === 'directory' && e.path.length > 100), 'a long directory name');
  });
}

async function collectError(tar: Buffer, opts?: ReadTarOptions): Promise<TarFormatError> {
  try {
    await readAllEntries(chunked(tar, 300), opts);
  } catch (e) {
    assert.ok(e instanceof TarFormatError, `expected TarFormatError, got ${String(e)}`);
    assert.equal(e.code, 'tar_invalid');
    return e;
  }
  assert.fail('reading did not fail');
}

test('reader: truncation, bad checksums and bad numbers are typed errors with entry and offset', async () => {
  const tar = await writeArchive(async (w) => {
    await w.addFile('first', bytes(1000, 1));
    await w.addFile('second', bytes(2000, 2));
    await w.finish();
  });
  // Layout: first header at 0, content 512..1536, second header at 1536, content 2048..4096.
  let e = await collectError(tar.subarray(0, 1536 + 100));
  assert.match(e.message, /inside an entry header at offset 1536/);
  assert.equal(e.context['offset'], 1536);

  e = await collectError(tar.subarray(0, 2048 + 1500));
  assert.match(e.message, /input ends inside the content of "second" \(header at offset 1536\): 500 of 2000 bytes missing/);
  assert.equal(e.context['entry'], 'second');

  e = await collectError(tar.subarray(0, 2048 + 2000)); // content complete, padding cut
  assert.match(e.message, /inside the padding after the content of "second"/);

  const flipped = Buffer.from(tar);
  flipped[1536 + 3] = flipped[1536 + 3]! ^ 1; // a byte of the second name
  e = await collectError(flipped);
  assert.match(e.message, /header checksum mismatch for "secnnd" at offset 1536/);
  assert.equal(e.context['offset'], 1536);

  const badSize = Buffer.from(tar);
  badSize.write('0000000x000\0', 1536 + 124, 'latin1');
  fixChecksum(badSize, 1536);
  e = await collectError(badSize);
  assert.match(e.message, /invalid size field .* "second" at offset 1536/);

  // base-256 size that does not fit in a safe integer.
  const huge = Buffer.from(tar);
  huge.fill(0xff, 1536 + 124, 1536 + 136);
  huge[1536 + 124] = 0x80;
  fixChecksum(huge, 1536);
  e = await collectError(huge);
  assert.match(e.message, /size .* "second" at offset 1536 is too large/);

  // A size larger than what follows: truncated content.
  const tooBig = Buffer.from(tar);
  tooBig.write('00000100000\0', 1536 + 124, 'latin1');
  fixChecksum(tooBig, 1536);
  e = await collectError(tooBig);
  assert.match(e.message, /input ends inside the content of "second"/);

  // Entry size limit.
  e = await collectError(tar, { maxEntrySizeBytes: 1500 });
  assert.match(e.message, /"second" at offset 1536 is 2000 bytes, more than the limit of 1500/);

  // Without end marker: fine by default, an error when required.
  const noEnd = tar.subarray(0, tar.byteLength - 1024);
  assert.equal((await readAllEntries(chunked(noEnd, 100))).length, 2);
  e = await collectError(noEnd, { requireEndMarker: true });
  assert.match(e.message, /without the end-of-archive zero blocks/);
});

function fixChecksum(buf: Buffer, off: number): void {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : buf[off + i]!;
  buf.write(sum.toString(8).padStart(6, '0') + '\0 ', off + 148, 'latin1');
}

test('reader: pax and GNU long-name entries, base-256 sizes, and their damage', async () => {
  const longPath = 'a/' + 'b'.repeat(150) + '/' + 'c'.repeat(150);
  const paxBody = (recs: string[]): Buffer => Buffer.from(recs.map((r) => {
    let len = r.length + 3;
    for (let i = 0; i < 3; i++) len = Buffer.byteLength(`${len} ${r}\n`);
    return `${len} ${r}\n`;
  }).join(''));
  const block = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc((512 - (b.byteLength % 512)) % 512)]);
  const pax = paxBody([`path=${longPath}`, 'mtime=1234.5']);
  const parts = [
    encodeTarHeader({ path: 'PaxHeaders/x', typeFlag: 'x', sizeBytes: pax.byteLength, mode: 0o644, mtimeSec: 0 }), block(pax),
    encodeTarHeader({ path: 'short-name', typeFlag: '0', sizeBytes: 3, mode: 0o600, mtimeSec: 0 }), block(Buffer.from('abc')),
  ];
  const gnuName = Buffer.from(longPath + 'L\0');
  parts.push(encodeTarHeader({ path: '././@LongLink', typeFlag: 'L', sizeBytes: gnuName.byteLength, mode: 0, mtimeSec: 0 }), block(gnuName));
  // A file whose size is written in base-256.
  const b256 = encodeTarHeader({ path: 'b256', typeFlag: '0', sizeBytes: 0, mode: 0o600, mtimeSec: 0 });
  b256.fill(0, 124, 136);
  b256[124] = 0x80;
  b256[135] = 5;
  fixChecksum(b256, 0);
  parts.push(b256, block(Buffer.from('fives')));
  const tar = Buffer.concat([...parts, Buffer.alloc(1024)]);
  const entries = await readAllEntries(chunked(tar, 200));
  assert.deepEqual(entries.map((e) => [e.path, e.data.toString()]), [[longPath, 'abc'], [longPath + 'L', 'fives']]);
  assert.equal(entries[0]!.mtimeSec, 1234);

  // A pax header with a broken record length.
  const badPax = Buffer.from('99 path=x\n');
  const badTar = Buffer.concat([
    encodeTarHeader({ path: 'PaxHeaders/x', typeFlag: 'x', sizeBytes: badPax.byteLength, mode: 0o644, mtimeSec: 0 }), block(badPax),
    encodeTarHeader({ path: 'f', typeFlag: '0', sizeBytes: 0, mode: 0o600, mtimeSec: 0 }), Buffer.alloc(1024),
  ]);
  const e = await collectError(badTar);
  assert.match(e.message, /malformed pax record length "99" in the extended header at offset 0/);
  // An extended header right before the end of input.
  const e2 = await collectError(Buffer.concat(parts.slice(0, 2)));
  assert.match(e2.message, /input ends after an extended header/);
});
