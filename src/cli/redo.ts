/**
 * `strata redo verify <paths...>`: checks Strata's TypeScript redo against PostgreSQL's own pages.
 *
 * Point it at WAL written with `wal_consistency_checking` (and full_page_writes on): every block
 * that carries a consistency image is replayed by src/redo/ from the previous version and compared
 * with the image under PostgreSQL's masking rules (src/redo/verify.ts). It prints one row per
 * resource manager and record type — records, blocks, images restored, blocks redone, verified,
 * mismatched, unsupported, failed, and blocks skipped because their previous version was never
 * seen — then the first mismatches and failures with relation, block and LSN.
 *
 * Exit status: 0 when nothing mismatched or failed and the WAL ended cleanly; 1 otherwise (the
 * report says which); 2 for usage errors. Read-only: it never writes anything.
 */
import type { Command } from 'commander';
import { formatLsn, parseLsn, type Lsn } from '../postgres/lsn.ts';
import { formatVerifyReport, runRedoVerifyOnFiles } from '../redo/verify.ts';
import { InvalidInputError } from '../util/errors.ts';

function optLsn(text: string | undefined, what: string): Lsn | undefined {
  if (text === undefined) return undefined;
  try {
    return parseLsn(text);
  } catch (e) {
    throw new InvalidInputError(`--${what}: ${(e as Error).message}`);
  }
}

export interface RedoVerifyCliOptions {
  start?: string;
  end?: string;
  json?: boolean;
  allTypes?: boolean;
  maxPages?: string;
}

export async function runRedoVerify(paths: string[], o: RedoVerifyCliOptions, io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream }): Promise<number> {
  const startLsn = optLsn(o.start, 'start');
  const endLsn = optLsn(o.end, 'end');
  if (startLsn !== undefined && endLsn !== undefined && endLsn < startLsn) throw new InvalidInputError(`--end ${formatLsn(endLsn)} is before --start ${formatLsn(startLsn)}`);
  let maxPages: number | undefined;
  if (o.maxPages !== undefined) {
    if (!/^[1-9][0-9]{0,8}$/.test(o.maxPages)) throw new InvalidInputError(`--max-pages: expected a positive integer, got "${o.maxPages}"`);
    maxPages = Number(o.maxPages);
  }
  const { report, end } = await runRedoVerifyOnFiles(paths, {
    ...(maxPages !== undefined ? { maxPages } : {}),
    scan: { ...(startLsn !== undefined ? { startLsn } : {}), ...(endLsn !== undefined ? { endLsn } : {}) },
  });
  const t = report.totals;
  const ok = t.mismatched === 0 && t.failed === 0 && end.clean;
  if (o.json === true) {
    io.stdout.write(JSON.stringify({ ...report, end: { lsn: formatLsn(end.lsn), reason: end.reason, clean: end.clean }, ok },
      (_k, v: unknown) => (typeof v === 'bigint' ? formatLsn(v) : v)) + '\n');
  } else {
    io.stdout.write(formatVerifyReport(report, { allTypes: o.allTypes === true }) + '\n');
    io.stdout.write(`WAL ends at ${formatLsn(end.lsn)}: ${end.reason}\n`);
  }
  if (!ok) {
    io.stderr.write(`strata redo verify: ${t.mismatched} mismatched, ${t.failed} failed${end.clean ? '' : `, the WAL ends in damage at ${formatLsn(end.lsn)}`}\n`);
    return 1;
  }
  return 0;
}

export function registerRedoCommands(program: Command, setExitCode: (n: number) => void): void {
  const redo = program.command('redo').description('Strata\'s TypeScript WAL redo (src/redo/)');
  redo
    .command('verify')
    .description('replay WAL with Strata\'s redo and compare every block with PostgreSQL\'s consistency-check image (WAL written with wal_consistency_checking)')
    .argument('<paths...>', 'WAL segment files or directories holding them (e.g. a pg_wal directory)')
    .option('--start <lsn>', 'first record to check (X/X)')
    .option('--end <lsn>', 'stop before the first record that ends after this LSN (X/X)')
    .option('--json', 'the whole report as one JSON document')
    .option('--all-types', 'also list record types that touched no block')
    .option('--max-pages <n>', 'pages kept in memory (8 KiB each; default 16384)')
    .action(async (paths: string[], o: RedoVerifyCliOptions) => {
      setExitCode(await runRedoVerify(paths, o, { stdout: process.stdout, stderr: process.stderr }));
    });
}
