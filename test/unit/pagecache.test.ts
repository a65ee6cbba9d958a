/**
 * The materialized page cache: newest-version-at-or-below semantics, LRU eviction by bytes, the
 * per-key version bound, dropTimeline and the counters.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ForkNumber, relBlockKey, type Key } from '../../src/storage/key.ts';
import { MaterializedPageCache, PAGE_CACHE_VERSION_OVERHEAD_BYTES } from '../../src/storage/pagecache.ts';
import { InvalidInputError } from '../../src/util/errors.ts';

const REL = { spcNode: 1663, dbNode: 5, relNode: 16384, forkNum: ForkNumber.main };
const k = (blk: number): Key => relBlockKey(REL, blk);
const PAGE = 8192;
const CHARGE = PAGE + PAGE_CACHE_VERSION_OVERHEAD_BYTES;

function page(tag: number): Buffer {
  return Buffer.alloc(PAGE, tag);
}

test('get returns the newest version at or below the LSN', () => {
  const c = new MaterializedPageCache({ maxBytes: 100 * CHARGE });
  const p20 = page(20);
  const p40 = page(40);
  const p30 = page(30);
  assert.equal(c.put('tl', k(1), 20n, p20), true);
  assert.equal(c.put('tl', k(1), 40n, p40), true);
  assert.equal(c.put('tl', k(1), 30n, p30), true); // out of order insert

  assert.equal(c.get('tl', k(1), 19n), null);
  assert.equal(c.get('tl', k(1), 20n)?.image, p20);
  assert.equal(c.get('tl', k(1), 29n)?.lsn, 20n);
  assert.equal(c.get('tl', k(1), 30n)?.image, p30);
  assert.equal(c.get('tl', k(1), 39n)?.image, p30);
  assert.equal(c.get('tl', k(1), 40n)?.image, p40);
  assert.equal(c.get('tl', k(1), 0xffff_ffff_ffff_ffffn)?.image, p40);
  // Other key, other timeline: nothing.
  assert.equal(c.get('tl', k(2), 40n), null);
  assert.equal(c.get('other', k(1), 40n), null);
  assert.equal(c.hits, 6);
  assert.equal(c.misses, 3);

  // A duplicate LSN is ignored (first image kept, size unchanged).
  const before = c.sizeBytes;
  assert.equal(c.put('tl', k(1), 30n, page(99)), false);
  assert.equal(c.get('tl', k(1), 30n)?.image, p30);
  assert.equal(c.sizeBytes, before);
  assert.equal(c.sizeBytes, 3 * CHARGE);
  assert.equal(c.versionCount, 3);
});

test('LRU eviction order under the byte bound', () => {
  const c = new MaterializedPageCache({ maxBytes: 3 * CHARGE });
  c.put('tl', k(1), 10n, page(1));
  c.put('tl', k(2), 10n, page(2));
  c.put('tl', k(3), 10n, page(3));
  assert.equal(c.sizeBytes, 3 * CHARGE);
  assert.equal(c.evictions, 0);

  // Touch k1, so k2 is now the least recently used.
  assert.ok(c.get('tl', k(1), 10n));
  c.put('tl', k(4), 10n, page(4));
  assert.equal(c.evictions, 1);
  assert.equal(c.get('tl', k(2), 10n), null);
  assert.ok(c.get('tl', k(1), 10n));
  assert.ok(c.get('tl', k(3), 10n));
  assert.ok(c.get('tl', k(4), 10n));
  assert.ok(c.sizeBytes <= c.maxBytes);

  // Recency order now (old → new): 1, 3, 4. A duplicate put also counts as use.
  c.put('tl', k(1), 10n, page(1));
  c.put('tl', k(5), 10n, page(5)); // evicts 3
  assert.equal(c.get('tl', k(3), 10n), null);
  assert.ok(c.get('tl', k(1), 10n));
  assert.equal(c.evictions, 2);

  // Versions of one key are evicted one by one, not as a block.
  const d = new MaterializedPageCache({ maxBytes: 3 * CHARGE });
  d.put('tl', k(1), 10n, page(1));
  d.put('tl', k(1), 20n, page(2));
  d.put('tl', k(2), 10n, page(3));
  assert.ok(d.get('tl', k(1), 15n)); // touch the 10n version
  d.put('tl', k(3), 10n, page(4)); // evicts k1@20
  assert.equal(d.get('tl', k(1), 25n)?.lsn, 10n);
  assert.equal(d.versionCount, 3);
});

test('byte bound counts real image sizes; too-large images are not cached', () => {
  const c = new MaterializedPageCache({ maxBytes: 10_000 });
  assert.equal(c.put('tl', k(1), 1n, Buffer.alloc(5000)), true);
  assert.equal(c.sizeBytes, 5000 + PAGE_CACHE_VERSION_OVERHEAD_BYTES);
  assert.equal(c.put('tl', k(2), 1n, Buffer.alloc(4000)), true);
  assert.equal(c.sizeBytes, 9000 + 2 * PAGE_CACHE_VERSION_OVERHEAD_BYTES);
  // 3000 more bytes do not fit: the least recently used (k1) goes.
  assert.equal(c.put('tl', k(3), 1n, Buffer.alloc(3000)), true);
  assert.equal(c.get('tl', k(1), 1n), null);
  assert.equal(c.sizeBytes, 7000 + 2 * PAGE_CACHE_VERSION_OVERHEAD_BYTES);
  // Larger than the whole cache: refused, nothing evicted.
  assert.equal(c.put('tl', k(4), 1n, Buffer.alloc(10_000)), false);
  assert.equal(c.evictions, 1);
  assert.equal(c.versionCount, 2);

  assert.throws(() => new MaterializedPageCache({ maxBytes: -1 }), InvalidInputError);
  assert.throws(() => new MaterializedPageCache({ maxBytes: 10, maxVersionsPerKey: 0 }), InvalidInputError);
});

test('per-key version bound drops the oldest LSN', () => {
  const c = new MaterializedPageCache({ maxBytes: 100 * CHARGE, maxVersionsPerKey: 3 });
  for (const lsn of [10n, 20n, 30n]) c.put('tl', k(1), lsn, page(Number(lsn)));
  c.put('tl', k(1), 40n, page(40));
  assert.equal(c.versionCount, 3);
  assert.equal(c.evictions, 1);
  assert.equal(c.get('tl', k(1), 15n), null);
  assert.equal(c.get('tl', k(1), 25n)?.lsn, 20n);
  // A version older than all kept ones is dropped straight away.
  assert.equal(c.put('tl', k(1), 5n, page(5)), false);
  assert.equal(c.get('tl', k(1), 9n), null);
  assert.equal(c.versionCount, 3);
  assert.equal(c.sizeBytes, 3 * CHARGE);
});

test('dropTimeline forgets only that timeline', () => {
  const c = new MaterializedPageCache({ maxBytes: 100 * CHARGE });
  c.put('a', k(1), 10n, page(1));
  c.put('a', k(1), 20n, page(2));
  c.put('a', k(2), 10n, page(3));
  c.put('b', k(1), 10n, page(4));
  assert.equal(c.dropTimeline('a'), 3);
  assert.equal(c.dropTimeline('a'), 0);
  assert.equal(c.get('a', k(1), 20n), null);
  assert.equal(c.get('b', k(1), 10n)?.image[0], 4);
  assert.equal(c.sizeBytes, CHARGE);
  assert.equal(c.versionCount, 1);
  assert.equal(c.evictions, 0);

  // The LRU list stays consistent after the drop: filling evicts b's version, then new ones.
  const small = new MaterializedPageCache({ maxBytes: 2 * CHARGE });
  small.put('a', k(1), 1n, page(1));
  small.put('b', k(1), 1n, page(2));
  small.dropTimeline('a');
  small.put('c', k(1), 1n, page(3));
  small.put('c', k(2), 1n, page(4)); // evicts b
  assert.equal(small.get('b', k(1), 1n), null);
  assert.ok(small.get('c', k(1), 1n));
  assert.ok(small.get('c', k(2), 1n));
  assert.equal(small.sizeBytes, 2 * CHARGE);
});

test('random workload: the byte bound holds and every hit is a version put at or below the request LSN', () => {
  let seed = 12345;
  const rand = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const c = new MaterializedPageCache({ maxBytes: 20 * 1200, maxVersionsPerKey: 4 });
  for (let i = 0; i < 5000; i++) {
    const tl = rand() < 0.5 ? 'x' : 'y';
    const key = k(Math.floor(rand() * 10));
    const lsn = BigInt(Math.floor(rand() * 50));
    const op = rand();
    if (op < 0.6) c.put(tl, key, lsn, Buffer.alloc(500 + Math.floor(rand() * 1000), Number(lsn)));
    else if (op < 0.99) {
      const got = c.get(tl, key, lsn);
      if (got !== null) {
        assert.ok(got.lsn <= lsn);
        assert.equal(got.image[0], Number(got.lsn)); // the image put under that LSN
      }
    } else c.dropTimeline(tl);
    assert.ok(c.sizeBytes <= c.maxBytes);
  }
  assert.ok(c.evictions > 0);
});
