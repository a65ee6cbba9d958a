/**
 * The `strata` command line. Each subcommand lives in its own module; this file only wires them
 * to commander and turns errors into one clear line on stderr and a non-zero exit code.
 */
import { Command, CommanderError } from 'commander';
import { StrataError } from '../util/errors.ts';
import { runWaldump, UsageError } from './waldump.ts';

export async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  const program = new Command('strata')
    .description('Strata: separated, branchable, bottomless storage for PostgreSQL 15')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program
    .command('waldump')
    .description('print the records of PostgreSQL 15 WAL segment files, one line per record')
    .argument('<paths...>', 'WAL segment files or directories holding them')
    .option('--start <lsn>', 'first record to print (X/X); default: the first record in the files')
    .option('--end <lsn>', 'stop before the first record that ends after this LSN (X/X)')
    .option('--json', 'print one JSON object per record')
    .action(async (paths: string[], opts: { start?: string; end?: string; json?: boolean }) => {
      exitCode = await runWaldump(paths, opts, { stdout: process.stdout, stderr: process.stderr });
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      return e.exitCode === 0 ? 0 : 2;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`strata: ${e.message}\n`);
      return 2;
    }
    if (e instanceof StrataError) {
      process.stderr.write(`strata: error: ${e.message}\n`);
      return e.code === 'invalid_input' ? 2 : 1;
    }
    process.stderr.write(`strata: unexpected error: ${(e as Error).stack ?? String(e)}\n`);
    return 1;
  }
  return exitCode;
}
