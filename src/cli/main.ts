/**
 * The `strata` command line. Each subcommand lives in its own module; this file only wires them
 * to commander and turns errors into one clear line on stderr and a non-zero exit code.
 */
import { Command, CommanderError } from 'commander';
import { StrataError } from '../util/errors.ts';
import { runWaldump, UsageError } from './waldump.ts';
import { runSafekeeper } from './safekeeper.ts';
import { runBroker } from './broker.ts';
import { registerPagectlCommands } from './pagectl.ts';
import { runPageserver } from './pageserver.ts';
import { rootLogger } from '../util/log.ts';
import { registerClusterCommands } from './cluster.ts';
import { registerTenantCommands } from './tenant.ts';
import { registerTimelineCommands } from './timeline.ts';
import { registerEndpointCommands } from './endpoint.ts';
import { registerQuickstartCommand } from './quickstart.ts';
import { registerRedoCommands } from './redo.ts';

export async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  const program = new Command('strata')
    .description('Strata: separated, branchable, bottomless storage for PostgreSQL 15')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    // Program options only before the subcommand: `strata pageserver --workdir` is the pageserver's own.
    .enablePositionalOptions()
    .option('--workdir <dir>', 'control plane state directory (default: ./.strata)');

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

  program
    .command('safekeeper')
    .description('run a safekeeper: durable WAL for computes (as a synchronous standby), served to pageservers')
    .requiredOption('--id <n>', 'this safekeeper\'s node id (a positive integer, unique among the safekeepers)')
    .requiredOption('--datadir <dir>', 'where timelines\' WAL and control files live')
    .option('--listen-pg <host:port>', 'replication (libpq protocol) service', '127.0.0.1:5454')
    .option('--listen-http <host:port>', 'HTTP API and /metrics', '127.0.0.1:7676')
    .option('--broker <host:port>', 'storage broker endpoint (omit for a single safekeeper without peers)')
    .option('--availability-zone <az>', 'published to the broker')
    .action(async (o: { id: string; datadir: string; listenPg: string; listenHttp: string; broker?: string; availabilityZone?: string }) => {
      exitCode = await runSafekeeper({
        id: o.id, dataDir: o.datadir, listenPg: o.listenPg, listenHttp: o.listenHttp, broker: o.broker ?? null,
        ...(o.availabilityZone !== undefined ? { availabilityZone: o.availabilityZone } : {}), log: rootLogger, stdout: process.stdout,
      });
    });

  program
    .command('pageserver')
    .description('run a pageserver: tenants, timelines and layer files; management HTTP API and page service')
    .requiredOption('--id <n>', 'this pageserver\'s node id (a positive integer)')
    .requiredOption('--workdir <dir>', 'where tenants, timelines and layer files live')
    .option('--listen-http <host:port>', 'management API, /metrics and /v1/openapi.json', '127.0.0.1:9898')
    .option('--listen-pg <host:port>', 'page service (libpq protocol: basebackup)', '127.0.0.1:64000')
    .option('--broker <host:port>', 'storage broker: timelines take their WAL from the safekeepers it knows')
    .option('--pg-bin <dir>', 'PostgreSQL 15 bin directory (initdb for bootstrap)')
    .option('-c, --tenant-default <key=value>', 'tenant config default (Neon\'s names), repeatable', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .action(async (o: { id: string; workdir: string; listenHttp: string; listenPg: string; broker?: string; pgBin?: string; tenantDefault: string[] }) => {
      exitCode = await runPageserver({
        id: o.id, workdir: o.workdir, listenHttp: o.listenHttp, listenPg: o.listenPg, broker: o.broker ?? null,
        ...(o.pgBin !== undefined ? { pgBin: o.pgBin } : {}), tenantDefaults: o.tenantDefault, log: rootLogger, stdout: process.stdout,
      });
    });

  program
    .command('broker')
    .description('run the storage broker: gRPC pub/sub of safekeeper timeline state')
    .option('--listen <host:port>', 'gRPC listen address', '127.0.0.1:50051')
    .option('--listen-http <host:port>', 'HTTP /metrics and /status (default: the gRPC port + 1)')
    .action(async (o: { listen: string; listenHttp?: string }) => {
      exitCode = await runBroker({ listen: o.listen, ...(o.listenHttp !== undefined ? { httpListen: o.listenHttp } : {}), log: rootLogger });
    });

  registerPagectlCommands(program, (n) => { exitCode = n; });
  registerClusterCommands(program);
  registerTenantCommands(program);
  registerTimelineCommands(program);
  registerEndpointCommands(program, (n) => { exitCode = n; });
  registerQuickstartCommand(program);
  registerRedoCommands(program, (n) => { exitCode = n; });

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
