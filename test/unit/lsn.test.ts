import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatLsn, formatLsnPadded, maxAlignLsn, parseLsn } from '../../src/postgres/lsn.ts';
import { parseWalSegmentFileName, walSegmentFileName } from '../../src/postgres/walformat.ts';
import { crc32c } from '../../src/postgres/crc32c.ts';

test('LSN text round-trips in PostgreSQL and pg_waldump forms', () => {
  assert.equal(parseLsn('0/16B3748'), 0x16b3748n);
  assert.equal(parseLsn('0/016B3748'), 0x16b3748n);
  assert.equal(parseLsn('FFFFFFFF/FFFFFFFF'), 0xffff_ffff_ffff_ffffn);
  assert.equal(parseLsn('1/0'), 1n << 32n);
  assert.equal(formatLsn(0x16b3748n), '0/16B3748');
  assert.equal(formatLsnPadded(0x16b3748n), '0/016B3748');
  assert.equal(formatLsn((0xabn << 32n) | 0x10n), 'AB/10');
  for (const v of [0n, 1n, 0x1234_5678_9abc_def0n, 0xffff_ffff_ffff_ffffn]) assert.equal(parseLsn(formatLsn(v)), v);
});

test('malformed LSN text is a clear error naming the text', () => {
  for (const bad of ['', '12', '0/', '/1', 'G/1', '0/123456789', '-1/0', '0x1/0', '1/2/3']) {
    assert.throws(() => parseLsn(bad), (e: Error) => e.message.includes(`"${bad}"`) && /X\/X/.test(e.message), bad);
  }
});

test('MAXALIGN of LSNs', () => {
  assert.equal(maxAlignLsn(0n), 0n);
  assert.equal(maxAlignLsn(1n), 8n);
  assert.equal(maxAlignLsn(8n), 8n);
  assert.equal(maxAlignLsn(0x1_0000_0001n), 0x1_0000_0008n);
});

test('WAL segment file names', () => {
  const seg = 16 * 1024 * 1024;
  assert.equal(walSegmentFileName(1, 1n, seg), '000000010000000000000001');
  assert.equal(walSegmentFileName(2, 0x1ffn, seg), '0000000200000001000000FF');
  assert.deepEqual(parseWalSegmentFileName('0000000200000001000000FF', seg), { timeline: 2, segNo: 0x1ffn, partial: false });
  assert.deepEqual(parseWalSegmentFileName('000000010000000000000003.partial', seg), { timeline: 1, segNo: 3n, partial: true });
  assert.equal(parseWalSegmentFileName('000000010000000000000100', seg), null, '256 segments per xlogid at 16 MiB');
  assert.equal(parseWalSegmentFileName('00000001000000000000000g', seg), null);
  assert.equal(parseWalSegmentFileName('archive_status', seg), null);
});

test('CRC-32C check vector and chaining', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.equal(crc32c(Buffer.from('6789'), crc32c(Buffer.from('12345'))), 0xe3069283);
  assert.equal(crc32c(new Uint8Array([0x31, 0x32])), crc32c(Buffer.from('12')), 'plain Uint8Array works');
});
