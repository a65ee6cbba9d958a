import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DecompressionError, DECOMPRESSION_FAILURE, type DecompressionFailure } from '../../src/postgres/compression/errors.ts';
import { pglzDecompress } from '../../src/postgres/compression/pglz.ts';
import { lz4DecompressBlock } from '../../src/postgres/compression/lz4.ts';
import { readZstdFrameHeader, zstdAsyncBackend, zstdBackend, zstdDecompress, zstdDecompressAsync } from '../../src/postgres/compression/zstd.ts';
import { lz4CliBlock, lz4CompressBlock, pglzCompress, randomBytes, rng, syntheticPage, zstdCompress } from './test-compressors.ts';

const te = new TextEncoder();
const bytes = (...parts: (number[] | string)[]): Uint8Array =>
  Uint8Array.from(parts.flatMap((p) => (typeof p === 'string' ? [...te.encode(p)] : p)));

function expectFailure(fn: () => unknown, codec: string, kind?: DecompressionFailure): DecompressionError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof DecompressionError, `expected a DecompressionError, got ${String(caught)}`);
  assert.equal(caught.codec, codec);
  assert.equal(caught.code, 'decompression_failed');
  if (kind !== undefined) assert.equal(caught.kind, kind, caught.message);
  return caught;
}

/** Inputs covering the shapes WAL images have: pages with tuples, empty-ish pages, text, runs, noise. */
function corpus(): { name: string; data: Uint8Array }[] {
  const r = rng(42);
  const items: { name: string; data: Uint8Array }[] = [];
  for (const tuples of [0, 1, 5, 40, 200]) {
    const p = syntheticPage(r, { tuples });
    items.push({ name: `heap page, ${tuples} tuples`, data: p.page });
    // the same page with its hole cut out, as PostgreSQL compresses it
    const cut = new Uint8Array(8192 - (p.upper - p.lower));
    cut.set(p.page.subarray(0, p.lower));
    cut.set(p.page.subarray(p.upper), p.lower);
    items.push({ name: `heap page without hole, ${tuples} tuples`, data: cut });
  }
  items.push({ name: 'index-like page', data: syntheticPage(r, { tuples: 60, specialBytes: 16 }).page });
  items.push({ name: 'zeros', data: new Uint8Array(8192) });
  items.push({ name: 'random 8192', data: randomBytes(r, 8192) });
  items.push({ name: 'random 100', data: randomBytes(r, 100) });
  items.push({ name: 'text', data: te.encode('the quick brown fox jumps over the lazy dog; '.repeat(150)) });
  const runs = new Uint8Array(8000);
  for (let i = 0, v = 0; i < runs.length; i++) {
    if (r() < 0.02) v = (r() * 256) | 0;
    runs[i] = v;
  }
  items.push({ name: 'runs', data: runs });
  items.push({ name: 'tiny', data: bytes('abcdefgh') });
  return items;
}

// ---------------------------------------------------------------- pglz

test('pglz: hand-encoded streams decode per the format', () => {
  // ctrl 0b100: literal 'a', literal 'b', tag (len 3+3=6, distance 2) → overlapping copy
  const out = new Uint8Array(8);
  assert.equal(pglzDecompress(bytes([0x04], 'ab', [0x03, 0x02]), out), 8);
  assert.equal(new TextDecoder().decode(out), 'abababab');
  // extended length: literal 'x', tag nibble 15 (18) + extension 2 = 20, distance 1
  const out2 = new Uint8Array(21);
  pglzDecompress(bytes([0x02], 'x', [0x0f, 0x01, 0x02]), out2);
  assert.equal(new TextDecoder().decode(out2), 'x'.repeat(21));
  // a 12-bit distance: 300 literals, then a tag copying 3 bytes from 300 back (0x12C → hi nibble 1, lo 0x2C)
  const lits = randomBytes(rng(1), 300);
  const parts: number[] = [];
  for (let i = 0; i < 296; i += 8) parts.push(0x00, ...lits.subarray(i, i + 8));
  parts.push(0x10, ...lits.subarray(296, 300), 0x10, 0x2c);
  const out3 = new Uint8Array(303);
  assert.equal(pglzDecompress(Uint8Array.from(parts), out3), 303);
  assert.deepEqual(out3.subarray(0, 300), lits);
  assert.deepEqual(out3.subarray(300), lits.subarray(0, 3));
});

test('pglz: round trips through a test compressor', () => {
  for (const { name, data } of corpus()) {
    const comp = pglzCompress(data);
    const out = new Uint8Array(data.length);
    assert.equal(pglzDecompress(comp, out, { checkComplete: true }), data.length, name);
    assert.deepEqual(out, data, name);
  }
  const r = rng(7);
  for (let i = 0; i < 200; i++) {
    const n = 1 + ((r() * 9000) | 0);
    // mixes of random and repeated material
    const data = new Uint8Array(n);
    for (let k = 0; k < n; k++) data[k] = r() < 0.5 && k > 10 ? data[k - 1 - ((r() * 10) | 0)]! : (r() * 256) | 0;
    const out = new Uint8Array(n);
    pglzDecompress(pglzCompress(data), out);
    assert.deepEqual(out, data, `random case ${i} (${n} bytes)`);
  }
});

test('pglz: corrupt streams are rejected with the right kind', () => {
  expectFailure(() => pglzDecompress(bytes([0x01, 0x00, 0x01]), new Uint8Array(4)), 'pglz', DECOMPRESSION_FAILURE.badOffset); // match before any output
  expectFailure(() => pglzDecompress(bytes([0x02], 'a', [0x00, 0x00]), new Uint8Array(4)), 'pglz', DECOMPRESSION_FAILURE.badOffset); // distance 0
  expectFailure(() => pglzDecompress(bytes([0x02], 'a', [0x00, 0x02]), new Uint8Array(4)), 'pglz', DECOMPRESSION_FAILURE.badOffset); // 2 back from 1
  expectFailure(() => pglzDecompress(bytes([0x02], 'a', [0x00]), new Uint8Array(4)), 'pglz', DECOMPRESSION_FAILURE.inputTruncated); // half a tag
  expectFailure(() => pglzDecompress(bytes([0x02], 'a', [0x0f, 0x01]), new Uint8Array(40)), 'pglz', DECOMPRESSION_FAILURE.inputTruncated); // missing extension
  expectFailure(() => pglzDecompress(bytes([0x02], 'a', [0x05, 0x01]), new Uint8Array(4)), 'pglz', DECOMPRESSION_FAILURE.outputOverflow); // 8 bytes into 4
  const e = expectFailure(() => pglzDecompress(bytes([0x00], 'abc'), new Uint8Array(5)), 'pglz', DECOMPRESSION_FAILURE.sizeMismatch);
  assert.match(e.message, /decompressed 3 bytes, expected 5/);
  expectFailure(() => pglzDecompress(bytes([0x00], 'abcde'), new Uint8Array(3)), 'pglz', DECOMPRESSION_FAILURE.trailingInput);
});

test('pglz: without checkComplete a prefix is decoded and the last copy is clipped', () => {
  const out = new Uint8Array(4);
  assert.equal(pglzDecompress(bytes([0x02], 'a', [0x05, 0x01]), out, { checkComplete: false }), 4);
  assert.deepEqual(out, bytes('aaaa'));
  const out2 = new Uint8Array(10);
  assert.equal(pglzDecompress(bytes([0x00], 'abc'), out2, { checkComplete: false }), 3);
});

// ---------------------------------------------------------------- lz4

test('lz4: hand-encoded blocks decode per the format', () => {
  // "abcd" + match(dist 4, len 8) + final literals "12345"
  const out = new Uint8Array(17);
  assert.equal(lz4DecompressBlock(bytes([0x44], 'abcd', [4, 0], [0x50], '12345'), out), 17);
  assert.equal(new TextDecoder().decode(out), 'abcdabcdabcd12345');
  // literal-length extension: 15 + 5 = 20 literals, block of literals only
  const lits = 'ABCDEFGHIJKLMNOPQRST';
  const out2 = new Uint8Array(20);
  lz4DecompressBlock(bytes([0xf0, 5], lits), out2);
  assert.equal(new TextDecoder().decode(out2), lits);
  // match-length extension: 'a' + match(dist 1, 4+15+0 = 19) + "vwxyz"
  const out3 = new Uint8Array(25);
  lz4DecompressBlock(bytes([0x1f], 'a', [1, 0, 0], [0x50], 'vwxyz'), out3);
  assert.equal(new TextDecoder().decode(out3), 'a'.repeat(20) + 'vwxyz');
  // 255-continuation: 15 + 255 + 10 = 280 literals
  const long = randomBytes(rng(3), 280);
  const out4 = new Uint8Array(280);
  lz4DecompressBlock(Uint8Array.from([0xf0, 255, 10, ...long]), out4);
  assert.deepEqual(out4, long);
  // empty input is a single zero token
  assert.equal(lz4DecompressBlock(bytes([0x00]), new Uint8Array(0)), 0);
});

test('lz4: round trips through a test compressor and the real lz4 CLI', () => {
  let cliBlocks = 0;
  for (const { name, data } of corpus()) {
    const out = new Uint8Array(data.length);
    assert.equal(lz4DecompressBlock(lz4CompressBlock(data), out), data.length, name);
    assert.deepEqual(out, data, name);
    const block = lz4CliBlock(data);
    if (block !== null) {
      cliBlocks++;
      out.fill(0xee);
      assert.equal(lz4DecompressBlock(block, out), data.length, `${name} (lz4 CLI)`);
      assert.deepEqual(out, data, `${name} (lz4 CLI)`);
    }
  }
  assert.ok(cliBlocks >= 10, `only ${cliBlocks} inputs were compressible by the lz4 CLI`);
  const r = rng(8);
  for (let i = 0; i < 200; i++) {
    const n = 1 + ((r() * 9000) | 0);
    const data = new Uint8Array(n);
    for (let k = 0; k < n; k++) data[k] = r() < 0.6 && k > 20 ? data[k - 1 - ((r() * 20) | 0)]! : (r() * 256) | 0;
    const out = new Uint8Array(n);
    lz4DecompressBlock(lz4CompressBlock(data), out);
    assert.deepEqual(out, data, `random case ${i} (${n} bytes)`);
  }
});

test('lz4: corrupt blocks are rejected with the right kind', () => {
  const F = DECOMPRESSION_FAILURE;
  expectFailure(() => lz4DecompressBlock(bytes([0x40], 'abcd', [0, 0], [0x50], 'xxxxx'), new Uint8Array(17)), 'lz4', F.badOffset); // distance 0
  expectFailure(() => lz4DecompressBlock(bytes([0x40], 'abcd', [5, 0], [0x50], 'xxxxx'), new Uint8Array(17)), 'lz4', F.badOffset); // before start
  expectFailure(() => lz4DecompressBlock(bytes([0x50], 'abc'), new Uint8Array(5)), 'lz4', F.inputTruncated); // literals cut short
  expectFailure(() => lz4DecompressBlock(bytes([0xf0]), new Uint8Array(20)), 'lz4', F.inputTruncated); // missing extension
  expectFailure(() => lz4DecompressBlock(bytes([0x44], 'abcd', [4]), new Uint8Array(17)), 'lz4', F.inputTruncated); // half a distance
  expectFailure(() => lz4DecompressBlock(bytes([0x44], 'abcd', [4, 0]), new Uint8Array(17)), 'lz4', F.inputTruncated); // no final sequence
  expectFailure(() => lz4DecompressBlock(bytes([0x50], 'abcde'), new Uint8Array(3)), 'lz4', F.outputOverflow);
  expectFailure(() => lz4DecompressBlock(bytes([0x4f], 'abcd', [4, 0, 200], [0x50], '12345'), new Uint8Array(17)), 'lz4', F.outputOverflow);
  const e = expectFailure(() => lz4DecompressBlock(bytes([0x50], 'abcde'), new Uint8Array(8)), 'lz4', F.sizeMismatch);
  assert.match(e.message, /decompressed 5 bytes, expected 8/);
  // end-of-block rule: this match ends 1 byte before the end; accepted only without checkComplete
  const bad = bytes([0x44], 'abcd', [4, 0], [0x10], 'z');
  expectFailure(() => lz4DecompressBlock(bad, new Uint8Array(13)), 'lz4', F.corrupt);
  const out = new Uint8Array(13);
  assert.equal(lz4DecompressBlock(bad, out, { checkComplete: false }), 13);
  assert.equal(new TextDecoder().decode(out), 'abcdabcdabcdz');
});

// ---------------------------------------------------------------- zstd

test('zstd: frames from a real zstd encoder decode, with and without a content size', () => {
  for (const { name, data } of corpus()) {
    for (const withContentSize of [true, false]) {
      const frame = zstdCompress(data, { withContentSize });
      const h = readZstdFrameHeader(frame);
      if (withContentSize) assert.equal(h.contentSizeBytes, data.length, `${name}: content size in header`);
      for (const backend of zstdBackend() === 'node:zlib' ? (['node:zlib', 'fzstd'] as const) : (['fzstd'] as const)) {
        const out = new Uint8Array(data.length).fill(0xee);
        assert.equal(zstdDecompress(frame, out, { backend }), data.length, `${name} ${backend}`);
        assert.deepEqual(out, data, `${name} ${backend} content size ${withContentSize}`);
      }
    }
  }
});

test('zstd: the default backend matches the Node.js version', () => {
  const [major, minor] = process.versions.node.split('.').map(Number) as [number, number];
  const hasNative = major > 23 || (major === 23 && minor >= 8) || (major === 22 && minor >= 15);
  assert.equal(zstdBackend(), hasNative ? 'node:zlib' : 'fzstd');
});

test('zstd: bad frames are rejected before or by the decoder', () => {
  const data = syntheticPage(rng(5), { tuples: 30 }).page;
  const frame = zstdCompress(data);
  const F = DECOMPRESSION_FAILURE;
  const magic = frame.slice();
  magic[0]! ^= 0xff;
  expectFailure(() => zstdDecompress(magic, new Uint8Array(8192)), 'zstd', F.corrupt);
  const reserved = frame.slice();
  reserved[4]! |= 0x08;
  expectFailure(() => zstdDecompress(reserved, new Uint8Array(8192)), 'zstd', F.corrupt);
  // a frame that claims a 2^41-byte window is refused before anything is allocated
  expectFailure(() => zstdDecompress(Uint8Array.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xf8, 0, 0, 0]), new Uint8Array(8192)), 'zstd', F.corrupt);
  // content size in the header differs from what the record says
  const e = expectFailure(() => zstdDecompress(frame, new Uint8Array(8000)), 'zstd', F.sizeMismatch);
  assert.match(e.message, /8192 bytes, expected 8000/);
  // no content size in the header: the decoded length is checked afterwards
  const noSize = zstdCompress(data, { withContentSize: false });
  expectFailure(() => zstdDecompress(noSize, new Uint8Array(8000)), 'zstd', F.outputOverflow);
  expectFailure(() => zstdDecompress(noSize, new Uint8Array(9000)), 'zstd', F.sizeMismatch);
  // trailing garbage after the frame
  const trailing = Uint8Array.from([...frame, 1, 2, 3, 4, 5, 6, 7, 8]);
  expectFailure(() => zstdDecompress(trailing, new Uint8Array(8192)), 'zstd', F.trailingInput);
  for (const backend of zstdBackend() === 'node:zlib' ? (['node:zlib', 'fzstd'] as const) : (['fzstd'] as const)) {
    for (let cut = 1; cut < frame.length; cut++) expectFailure(() => zstdDecompress(frame.subarray(0, cut), new Uint8Array(8192), { backend }), 'zstd');
  }
  expectFailure(() => zstdDecompress(frame.subarray(0, 3), new Uint8Array(8192)), 'zstd', F.inputTruncated);
});

test('zstd async (native thread pool on Node < 22.15): same bytes as the sync decoder, same checks', async () => {
  const backend = await zstdAsyncBackend();
  assert.equal(backend, zstdBackend() === 'node:zlib' ? 'node:zlib' : '@mongodb-js/zstd', 'the native module loads here');
  const r = rng(77);
  for (let i = 0; i < 20; i++) {
    const data = syntheticPage(r, { tuples: 10 + i * 3 }).page;
    const frame = zstdCompress(data, { withContentSize: i % 2 === 0 });
    const a = new Uint8Array(8192);
    const b = new Uint8Array(8192);
    zstdDecompress(frame, a);
    assert.equal(await zstdDecompressAsync(frame, b), 8192);
    assert.deepEqual(b, a);
    assert.deepEqual(b, data);
  }
  const frame = zstdCompress(syntheticPage(r, { tuples: 40 }).page);
  const failure = async (src: Uint8Array, out: Uint8Array): Promise<DecompressionError> => {
    try {
      await zstdDecompressAsync(src, out);
    } catch (err) {
      assert.ok(err instanceof DecompressionError);
      return err;
    }
    assert.fail('expected a DecompressionError');
  };
  const F = DECOMPRESSION_FAILURE;
  assert.equal((await failure(frame, new Uint8Array(8000))).kind, F.sizeMismatch);
  assert.equal((await failure(Buffer.concat([frame, Buffer.from([1])]), new Uint8Array(8192))).kind, F.trailingInput);
  for (const cut of [3, 10, frame.length - 1]) await failure(frame.subarray(0, cut), new Uint8Array(8192));
});

// ---------------------------------------------------------------- damage, all codecs

interface Codec {
  name: 'pglz' | 'lz4' | 'zstd';
  compress: (d: Uint8Array) => Uint8Array;
  decompress: (s: Uint8Array, o: Uint8Array) => number;
}
const codecs: Codec[] = [
  { name: 'pglz', compress: pglzCompress, decompress: (s, o) => pglzDecompress(s, o, { checkComplete: true }) },
  { name: 'lz4', compress: lz4CompressBlock, decompress: (s, o) => lz4DecompressBlock(s, o) },
  { name: 'zstd', compress: (d) => zstdCompress(d), decompress: (s, o) => zstdDecompress(s, o) },
];

test('every truncation of a compressed page is detected', () => {
  const p = syntheticPage(rng(11), { tuples: 45 });
  for (const c of codecs) {
    const comp = c.compress(p.page);
    assert.ok(comp.length < 8192, `${c.name} did not compress the page`);
    for (let cut = 1; cut < comp.length; cut++) {
      expectFailure(() => c.decompress(comp.subarray(0, comp.length - cut), new Uint8Array(8192)), c.name);
    }
    // ... and so is appended garbage
    expectFailure(() => c.decompress(Uint8Array.from([...comp, 0x00, 0x11, 0x22, 0x33]), new Uint8Array(8192)), c.name);
  }
});

test('damaging the first item is always detected', () => {
  const p = syntheticPage(rng(12), { tuples: 45 });
  const damage: Record<Codec['name'], (b: Uint8Array) => void> = {
    pglz: (b) => { b[0]! |= 0x01; }, // the first item becomes a match, with nothing before it
    lz4: (b) => { b[0]! &= 0x0f; }, // the first sequence loses its literals: its match has nothing before it
    zstd: (b) => { b[1]! ^= 0x40; }, // the magic number
  };
  for (const c of codecs) {
    const comp = c.compress(p.page).slice();
    damage[c.name](comp);
    expectFailure(() => c.decompress(comp, new Uint8Array(8192)), c.name);
  }
});

test('random byte damage never escapes as an untyped error or writes outside the output', () => {
  const r = rng(13);
  const p = syntheticPage(r, { tuples: 45 });
  for (const c of codecs) {
    const comp = c.compress(p.page);
    let detected = 0;
    let silent = 0;
    const trials = c.name === 'zstd' ? 300 : 2000;
    for (let t = 0; t < trials; t++) {
      const bad = comp.slice();
      const flips = 1 + ((r() * 3) | 0);
      for (let f = 0; f < flips; f++) bad[(r() * bad.length) | 0]! ^= 1 + ((r() * 255) | 0);
      // decode into the middle of a larger buffer whose guard bytes must stay untouched
      const arena = new Uint8Array(8192 + 64).fill(0xa5);
      const out = arena.subarray(32, 32 + 8192);
      try {
        assert.equal(c.decompress(bad, out), 8192);
        silent++;
      } catch (err) {
        assert.ok(err instanceof DecompressionError, `${c.name}: untyped ${String(err)}`);
        detected++;
      }
      for (let g = 0; g < 32; g++) {
        assert.equal(arena[g], 0xa5, `${c.name}: wrote before the output`);
        assert.equal(arena[32 + 8192 + g], 0xa5, `${c.name}: wrote after the output`);
      }
    }
    assert.equal(detected + silent, trials);
    console.log(`# ${c.name}: ${detected}/${trials} damaged streams rejected by the codec (the rest decode to 8192 bytes; the record CRC guards those)`);
  }
});
