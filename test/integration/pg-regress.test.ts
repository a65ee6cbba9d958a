/**
 * Opt-in long test (STRATA_PG_REGRESS=1): PostgreSQL 15's own regression suite (pg_regress,
 * parallel_schedule, installcheck mode) runs against a compute on a Strata timeline; then a branch
 * at the LSN where the suite ended must dump exactly what the compute dumps there and pass
 * pg_amcheck --heapallindexed.
 *
 * Why it is built this way:
 * - The suite is the broadest WAL generator there is (nearly every record type of every resource
 *   manager), and the compute runs with wal_consistency_checking=all, so the timeline receives an
 *   image for every change. Branching at the end and comparing dumps checks ingestion and page
 *   reconstruction of all of it at once.
 * - The test files are not in the postgresql-15 binary package and are never committed here: they
 *   come from an unpacked source tree (STRATA_PG_SRC) or from the Debian source package of the
 *   installed server version, downloaded once with `apt-get source` into a cache directory
 *   (STRATA_CACHE_DIR, default ~/.cache/strata/pg15-src). regress.so is compiled at test time
 *   from that tree's regress.c against the server headers (postgresql-server-dev-15, taken apart
 *   with `dpkg -x` into the cache — installing it would pull in clang and LLVM); autoinc.so and
 *   refint.so are the ones the server package ships.
 * - As root, PostgreSQL runs as the postgres OS user. It reads the suite's data files (COPY FROM)
 *   and writes into the output directory (COPY TO results/...), and it loads regress.so. So the
 *   regress directory is copied into the test's 0755 work directory (readable whatever the
 *   permissions of the source or the cache), and results/ is created world-writable up front
 *   (pg_regress only creates it when it is missing, with the umask).
 * - autovacuum is off (as in compute-branching.test.ts) so that nothing writes between the LSN we
 *   record and the dump of the compute taken right after it.
 * - Everything the test starts is stopped in after(), also when a test fails; the work directory
 *   is removed unless STRATA_KEEP_TMP=1 (then its path is printed: the compute's data directory is
 *   <endpoint dir>/pgdata, and the compute then keeps all its WAL there for pg_waldump). A run
 *   needs about 20 GB of temp space, most of it the pageserver's layers.
 * - STRATA_PG_REGRESS_REDO_MODE=verify runs the tenant in redo_mode = verify: every consistency
 *   image the suite produces is also compared with Strata's TypeScript redo (docs/redo.md); the
 *   counts per rmgr/record type are printed, and a mismatch or a redo failure fails the test.
 */
import { execFile } from 'node:child_process';
import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Endpoint } from '../../src/compute/endpoint.ts';
import { bootstrapTimeline } from '../../src/pageserver/import/bootstrap.ts';
import { Pageserver } from '../../src/pageserver/pageserver.ts';
import type { Tenant } from '../../src/pageserver/tenant.ts';
import { formatLsn, type Lsn } from '../../src/postgres/lsn.ts';
import { pgBinDir } from '../../src/postgres/pgbin.ts';
import { Logger, type LogFields, type LogLevel } from '../../src/util/log.ts';
import { amcheckAll, assertSameDump, dumpAll, endpointTarget } from '../support/endpoint-target.ts';
import { IngestVerifyResult, resultCount } from '../../src/redo/ingestverify.ts';

const ENABLED = process.env['STRATA_PG_REGRESS'] === '1';
const SKIP_MESSAGE = 'opt-in: set STRATA_PG_REGRESS=1 to run PostgreSQL 15\'s regression suite against a Strata compute '
  + '(several minutes; STRATA_PG_SRC=<unpacked postgresql-15 source tree> avoids the download)';

const KEEP_TMP = process.env['STRATA_KEEP_TMP'] === '1';
/** With STRATA_KEEP_TMP=1 the compute also keeps all its WAL (about 2 GB), for pg_waldump afterwards. */
const SETTINGS = { fsync: false, autovacuum: false, ...(KEEP_TMP ? { wal_keep_size: '8GB' } : {}) };
const MAX_CONNECTIONS = 8;
const REGRESS_TIMEOUT_MS = 40 * 60_000;
const CATCH_UP_TIMEOUT_MS = 30 * 60_000;
const DOWNLOAD_TIMEOUT_MS = 10 * 60_000;
const DIFFS_HEAD_LINES = 120;
const MAX_CAPTURED_LOG_LINES = 200;
const MAX_COPY_ENTRIES = 20_000;

// ---------------------------------------------------------------------------------------------
// Small process helper.

interface Ran {
  command: string;
  exitCode: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

function run(file: string, args: readonly string[], opts: { cwd?: string; timeoutMs: number }): Promise<Ran> {
  return new Promise((resolve) => {
    const child = execFile(file, [...args], {
      encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, timeout: opts.timeoutMs, cwd: opts.cwd,
      env: { ...process.env, LC_ALL: 'C' },
    }, (err, stdout, stderr) => {
      const spawnError = err !== null && child.exitCode === null && child.signalCode === null ? `${err.message}\n` : '';
      resolve({
        command: `${file} ${args.join(' ')}`, exitCode: child.exitCode, signal: child.signalCode, stdout, stderr: spawnError + stderr,
      });
    });
  });
}

function tail(text: string, lines: number): string {
  return text.trim().split('\n').slice(-lines).join('\n');
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL installation facts.

interface PgInstall {
  binDir: string;
  pkgLibDir: string;
  includeDirServer: string;
  /** "15.18" */
  upstreamVersion: string;
  /** "15.18-0+deb12u1", or null when the server is not Debian's package. */
  debianVersion: string | null;
}

async function pgInstall(): Promise<PgInstall> {
  const binDir = pgBinDir();
  const pgConfig = path.join(binDir, 'pg_config');
  const r = await run(existsSync(pgConfig) ? pgConfig : 'pg_config', ['--bindir', '--pkglibdir', '--includedir-server', '--version'], { timeoutMs: 30_000 });
  if (r.exitCode !== 0) throw new Error(`${r.command} failed: ${r.stderr}`);
  const [bin, pkgLibDir, includeDirServer, version] = r.stdout.trim().split('\n');
  const m = /^PostgreSQL (15\.\d+)/.exec(version ?? '');
  if (bin === undefined || pkgLibDir === undefined || includeDirServer === undefined || m === null) {
    throw new Error(`pg_config does not describe a PostgreSQL 15 installation: ${r.stdout}`);
  }
  const deb = /\(Debian ([^)\s]+)\)/.exec(version ?? '');
  return { binDir: bin, pkgLibDir, includeDirServer, upstreamVersion: m[1]!, debianVersion: deb?.[1] ?? null };
}

// ---------------------------------------------------------------------------------------------
// Regression test sources: STRATA_PG_SRC, else the Debian source package in the cache.

function cacheDir(): string {
  return process.env['STRATA_CACHE_DIR'] ?? path.join(os.homedir(), '.cache', 'strata', 'pg15-src');
}

function isRegressTree(root: string): boolean {
  const regress = path.join(root, 'src', 'test', 'regress');
  return ['parallel_schedule', 'regress.c', 'sql', 'expected', 'data'].every((n) => existsSync(path.join(regress, n)));
}

function noSourceHelp(pg: PgInstall, cache: string): string {
  const pkg = pg.debianVersion === null ? 'postgresql-15' : `postgresql-15=${pg.debianVersion}`;
  return [
    `To get the sources, either`,
    `  (a) let the test download them: apt needs a deb-src entry for the Debian release of the installed server — in`,
    `      /etc/apt/sources.list.d/*.sources add "deb-src" to the "Types:" line of the entry for your mirror's main suite`,
    `      (or add a "deb-src <mirror URI> <suite> main" line to /etc/apt/sources.list), run "apt-get update", then`,
    `      check with: cd ${cache} && apt-get source --download-only ${pkg}`,
    `  (b) or unpack a PostgreSQL ${pg.upstreamVersion} source tree yourself and set STRATA_PG_SRC=/path/to/postgresql-${pg.upstreamVersion}`,
    `      (the directory that contains src/test/regress).`,
  ].join('\n');
}

async function regressSourceTree(pg: PgInstall, note: (msg: string) => void): Promise<string> {
  const explicit = process.env['STRATA_PG_SRC'];
  if (explicit !== undefined && explicit !== '') {
    const root = path.resolve(explicit);
    if (!isRegressTree(root)) {
      throw new Error(`STRATA_PG_SRC=${explicit} is not an unpacked PostgreSQL 15 source tree: ${path.join(root, 'src/test/regress')} `
        + 'must hold parallel_schedule, regress.c, sql/, expected/ and data/');
    }
    const configure = path.join(root, 'configure');
    if (existsSync(configure)) {
      const v = /PACKAGE_VERSION='([^']+)'/.exec(readFileSync(configure, 'latin1'))?.[1];
      if (v !== undefined && v !== pg.upstreamVersion) note(`warning: STRATA_PG_SRC is PostgreSQL ${v}, the server is ${pg.upstreamVersion}; expected outputs may differ`);
    }
    return root;
  }

  const cache = cacheDir();
  const root = path.join(cache, `postgresql-${pg.upstreamVersion}`);
  if (isRegressTree(root)) return root;
  mkdirSync(cache, { recursive: true });
  if (pg.debianVersion === null) {
    throw new Error(`the PostgreSQL server is not Debian's package (pg_config --version has no "(Debian …)"), so the test cannot fetch its sources.\n${noSourceHelp(pg, cache)}`);
  }
  const orig = () => readdirSync(cache).find((n) => n.startsWith(`postgresql-15_${pg.upstreamVersion}.orig.tar.`));
  if (orig() === undefined) {
    note(`downloading the postgresql-15=${pg.debianVersion} source package into ${cache}`);
    const r = await run('apt-get', ['source', '--download-only', `postgresql-15=${pg.debianVersion}`], { cwd: cache, timeoutMs: DOWNLOAD_TIMEOUT_MS });
    if (r.exitCode !== 0 || orig() === undefined) {
      throw new Error(`could not download PostgreSQL's regression test sources: \`${r.command}\` in ${cache} exited ${r.exitCode ?? r.signal}:\n`
        + `${tail(r.stderr || r.stdout, 8)}\n${noSourceHelp(pg, cache)}`);
    }
  }
  // Unpack only src/test/regress into a scratch directory, then move the tree into place in one rename.
  const scratch = mkdtempSync(path.join(cache, 'unpack-'));
  try {
    const inner = `postgresql-${pg.upstreamVersion}/src/test/regress`;
    const r = await run('tar', ['-xf', path.join(cache, orig()!), '-C', scratch, inner], { timeoutMs: DOWNLOAD_TIMEOUT_MS });
    if (r.exitCode !== 0) throw new Error(`could not unpack ${inner} from ${orig()}: ${tail(r.stderr, 8)}`);
    if (!isRegressTree(path.join(scratch, `postgresql-${pg.upstreamVersion}`))) throw new Error(`${orig()} has no complete ${inner}`);
    rmSync(root, { recursive: true, force: true });
    renameSync(path.join(scratch, `postgresql-${pg.upstreamVersion}`), root);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  return root;
}

/** Server headers: the installed ones, else postgresql-server-dev-15 unpacked (not installed) into the cache. */
async function serverIncludeDir(pg: PgInstall, note: (msg: string) => void): Promise<string> {
  if (existsSync(path.join(pg.includeDirServer, 'postgres.h'))) return pg.includeDirServer;
  const cache = cacheDir();
  if (pg.debianVersion === null) {
    throw new Error(`no PostgreSQL server headers at ${pg.includeDirServer} (needed to build regress.so) and the server is not Debian's package; install the server headers for PostgreSQL ${pg.upstreamVersion}`);
  }
  const unpacked = path.join(cache, `server-dev-${pg.debianVersion}`);
  const include = path.join(unpacked, pg.includeDirServer);
  if (existsSync(path.join(include, 'postgres.h'))) return include;
  mkdirSync(cache, { recursive: true });
  const scratch = mkdtempSync(path.join(cache, 'server-dev-'));
  try {
    note(`downloading postgresql-server-dev-15=${pg.debianVersion} (headers only, not installed) into ${cache}`);
    const dl = await run('apt-get', ['download', `postgresql-server-dev-15=${pg.debianVersion}`], { cwd: scratch, timeoutMs: DOWNLOAD_TIMEOUT_MS });
    const deb = readdirSync(scratch).find((n) => n.endsWith('.deb'));
    if (dl.exitCode !== 0 || deb === undefined) {
      throw new Error(`could not download the server headers: \`${dl.command}\` exited ${dl.exitCode ?? dl.signal}:\n${tail(dl.stderr || dl.stdout, 8)}\n`
        + `Run "apt-get update" and retry, or install postgresql-server-dev-15 so that ${pg.includeDirServer}/postgres.h exists.`);
    }
    const x = await run('dpkg', ['-x', path.join(scratch, deb), path.join(scratch, 'root')], { timeoutMs: DOWNLOAD_TIMEOUT_MS });
    if (x.exitCode !== 0) throw new Error(`dpkg -x ${deb} failed: ${tail(x.stderr, 8)}`);
    if (!existsSync(path.join(scratch, 'root', pg.includeDirServer, 'postgres.h'))) throw new Error(`${deb} has no ${pg.includeDirServer}/postgres.h`);
    rmSync(unpacked, { recursive: true, force: true });
    renameSync(path.join(scratch, 'root'), unpacked);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  return include;
}

/** Makes a copied tree readable (and its directories searchable) by everyone: the server reads it as another user. */
function makeWorldReadable(root: string): void {
  let seen = 0;
  const walk = (p: string): void => {
    if (++seen > MAX_COPY_ENTRIES) throw new Error(`more than ${MAX_COPY_ENTRIES} entries under ${root}`);
    const st = lstatSync(p);
    if (st.isSymbolicLink()) return;
    if (st.isDirectory()) {
      chmodSync(p, 0o755);
      for (const name of readdirSync(p)) walk(path.join(p, name));
    } else {
      chmodSync(p, (st.mode & 0o111) !== 0 ? 0o755 : 0o644);
    }
  };
  walk(root);
}

// ---------------------------------------------------------------------------------------------
// A logger that also keeps the pageserver's warnings and errors for assertion messages.

class CapturingLogger extends Logger {
  private readonly sink: string[];

  constructor(fields: LogFields, sink: string[]) {
    super(fields);
    this.sink = sink;
  }

  override child(fields: LogFields): Logger {
    return new CapturingLogger({ ...this.fields, ...fields }, this.sink);
  }

  override log(level: LogLevel, message: string, fields: LogFields): void {
    if (level === 'warn' || level === 'error') {
      const all = { ...this.fields, ...fields };
      const parts = Object.entries(all).filter(([k, v]) => v !== undefined && k !== 'tenant_id').map(([k, v]) => `${k}=${String(v)}`);
      this.sink.push(`${level} ${message} ${parts.join(' ')}`);
      if (this.sink.length > MAX_CAPTURED_LOG_LINES) this.sink.shift();
    }
    super.log(level, message, fields);
  }
}

// ---------------------------------------------------------------------------------------------

// The skip sits on each test (so the runner counts and names them); the hooks do nothing when skipped.
const SKIP = ENABLED ? false : SKIP_MESSAGE;
const REDO_MODE_ENV = process.env['STRATA_PG_REGRESS_REDO_MODE'] ?? 'images';
if (REDO_MODE_ENV !== 'images' && REDO_MODE_ENV !== 'verify' && REDO_MODE_ENV !== 'typescript') {
  throw new Error(`STRATA_PG_REGRESS_REDO_MODE must be images, verify or typescript, not "${REDO_MODE_ENV}"`);
}
const REDO_MODE: 'images' | 'verify' | 'typescript' = REDO_MODE_ENV;

describe('PostgreSQL 15 regression suite on a Strata compute, then a branch at its end', { timeout: 2 * 3_600_000 }, () => {
  let workdir = '';
  const endpoints: Endpoint[] = [];
  const logLines: string[] = [];
  const timings: Array<[string, number]> = [];
  let ps: Pageserver | undefined;
  let tenant: Tenant;
  let mainId = '';
  let main: Endpoint;
  let pg: PgInstall;
  let inputDir = '';
  let libDir = '';
  let epCount = 0;

  const note = (msg: string) => console.log(`pg-regress: ${msg}`);
  const timed = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    try {
      return await fn();
    } finally {
      const ms = performance.now() - started;
      timings.push([name, ms]);
      note(`${name}: ${(ms / 1000).toFixed(1)} s`);
    }
  };
  const recentLog = () => (logLines.length === 0 ? '(no pageserver warnings or errors)' : `pageserver warnings/errors (last ${Math.min(logLines.length, 20)}):\n${logLines.slice(-20).join('\n')}`);

  const startEndpoint = async (timelineId: string): Promise<Endpoint> => {
    const ep = await Endpoint.start({ pageserver: ps!, tenantId: tenant.tenantId, timelineId, dir: path.join(workdir, `ep${++epCount}`), settings: SETTINGS });
    endpoints.push(ep);
    return ep;
  };

  before(async () => {
    if (!ENABLED) return;
    workdir = mkdtempSync(path.join(os.tmpdir(), 'strata-pgregress-'));
    chmodSync(workdir, 0o755);
    await timed('setup: sources and regress.so', async () => {
      pg = await pgInstall();
      const src = await regressSourceTree(pg, note);
      note(`regression sources: ${src}`);
      const include = await serverIncludeDir(pg, note);

      // The regress directory, readable by the server's OS user; the output directory with a results/ it can write.
      inputDir = path.join(workdir, 'regress');
      cpSync(path.join(src, 'src', 'test', 'regress'), inputDir, { recursive: true, dereference: true });
      makeWorldReadable(inputDir);
      const outDir = path.join(workdir, 'regress-out');
      mkdirSync(path.join(outDir, 'results'), { recursive: true });
      chmodSync(outDir, 0o755);
      chmodSync(path.join(outDir, 'results'), 0o777);

      libDir = path.join(workdir, 'lib');
      mkdirSync(libDir, { mode: 0o755 });
      chmodSync(libDir, 0o755);
      const cc = await run('gcc', ['-O2', '-fPIC', '-shared', `-I${include}`, path.join(inputDir, 'regress.c'), '-o', path.join(libDir, 'regress.so')], { timeoutMs: 120_000 });
      if (cc.exitCode !== 0) throw new Error(`building regress.so failed: ${cc.command}\n${tail(cc.stderr, 20)}`);
      for (const lib of ['autoinc.so', 'refint.so']) {
        const target = path.join(pg.pkgLibDir, lib);
        if (!existsSync(target)) throw new Error(`${target} is missing (it ships with the postgresql-15 package)`);
        symlinkSync(target, path.join(libDir, lib));
      }
    });

    await timed('setup: pageserver and compute', async () => {
      ps = await Pageserver.start({
        workdir: path.join(workdir, 'pageserver'), pageCacheBytes: 64 << 20, blockCacheBytes: 32 << 20, waitLsnTimeoutMs: 60_000,
        listenPg: { host: '127.0.0.1', port: 0 }, walReceiverBackoffMs: { min: 50, max: 1000 }, log: new CapturingLogger({}, logLines),
      });
      tenant = await ps.tenants.createTenant({ config: { redoMode: REDO_MODE } });
      const tl = await bootstrapTimeline(tenant);
      mainId = tl.timelineId;
      main = await startEndpoint(mainId);
      note(`compute on timeline ${mainId}: port ${main.port}, data directory ${main.dataDir}`);
    });
  });

  after(async () => {
    for (const ep of endpoints) await ep.kill().catch(() => undefined);
    await ps?.shutdown({ flush: false }).catch(() => undefined);
    if (timings.length > 0) note(`timings: ${timings.map(([n, ms]) => `${n} ${(ms / 1000).toFixed(1)} s`).join('; ')}`);
    if (workdir === '') return;
    if (KEEP_TMP) note(`kept ${workdir} (compute data directories: ${workdir}/ep*/pgdata)`);
    else rmSync(workdir, { recursive: true, force: true });
  });

  test('pg_regress parallel_schedule passes on the compute', { skip: SKIP }, async (t) => {
    const outDir = path.join(workdir, 'regress-out');
    const pgRegress = path.join(pg.pkgLibDir, 'pgxs', 'src', 'test', 'regress', 'pg_regress');
    const r = await timed('pg_regress run', () => run(pgRegress, [
      `--inputdir=${inputDir}`, `--outputdir=${outDir}`, `--bindir=${pg.binDir}`, `--dlpath=${libDir}`,
      '--host=127.0.0.1', `--port=${main.port}`, '--user=postgres',
      `--schedule=${path.join(inputDir, 'parallel_schedule')}`, `--max-connections=${MAX_CONNECTIONS}`,
    ], { cwd: outDir, timeoutMs: REGRESS_TIMEOUT_MS }));
    const summary = /^\s*All (\d+) tests passed\.\s*$/m.exec(r.stdout);
    if (r.exitCode !== 0 || summary === null) {
      const diffsFile = path.join(outDir, 'regression.diffs');
      const diffs = existsSync(diffsFile) ? readFileSync(diffsFile, 'utf8').split('\n').slice(0, DIFFS_HEAD_LINES).join('\n') : '(no regression.diffs)';
      assert.fail(`pg_regress exited ${r.exitCode ?? r.signal}:\n${tail(r.stdout, 30)}\n${tail(r.stderr, 10)}\n`
        + `--- ${diffsFile} (first ${DIFFS_HEAD_LINES} lines):\n${diffs}\n${recentLog()}`);
    }
    t.diagnostic(`pg_regress: All ${summary[1]} tests passed`);
    assert.ok(Number(summary[1]) > 100, `the schedule ran ${summary[1]} tests; parallel_schedule has about 200`);
  });

  test('a branch at the end LSN dumps the same as the compute and pg_amcheck is clean', { skip: SKIP }, async (t) => {
    // Everything the compute wrote must be in the timeline.
    const target = endpointTarget(main.port);
    let lsn: Lsn;
    try {
      lsn = await target.currentLsn('insert');
    } finally {
      await target.close();
    }
    const timeline = ps!.getTimeline(tenant.tenantId, mainId);
    const ingestStart = timeline.lastRecordLsn;
    await timed('ingest catch-up', async () => {
      try {
        await timeline.waitLsn(lsn, CATCH_UP_TIMEOUT_MS);
      } catch (err) {
        assert.fail(`the timeline did not ingest up to ${formatLsn(lsn)} (last record ${formatLsn(timeline.lastRecordLsn)}, state ${timeline.state}): `
          + `${err instanceof Error ? err.message : String(err)}\n${recentLog()}`);
      }
    });
    t.diagnostic(`end LSN ${formatLsn(lsn)}; the timeline was at ${formatLsn(ingestStart)} when the catch-up wait began`);
    if (REDO_MODE === 'verify') {
      const rows = timeline.resources.metrics.redoVerify.types();
      let verified = 0;
      const bad: string[] = [];
      for (const r of rows) {
        const [v, mismatched, unsupported, failed, noBase] = [IngestVerifyResult.verified, IngestVerifyResult.mismatched,
          IngestVerifyResult.unsupported, IngestVerifyResult.failed, IngestVerifyResult.noBase].map((k) => resultCount(r, k));
        verified += v!;
        t.diagnostic(`redo verify ${r.rmgr}/${r.recordType}: verified ${v} mismatched ${mismatched} unsupported ${unsupported} failed ${failed} no_base ${noBase}`);
        if (mismatched! > 0 || failed! > 0) bad.push(`${r.rmgr}/${r.recordType}: ${mismatched} mismatched, ${failed} failed`);
      }
      assert.deepEqual(bad, [], 'the TypeScript redo agrees with every consistency image');
      assert.ok(verified > 0, 'blocks were verified');
    }
    const expected = await timed('pg_dumpall of the compute', () => dumpAll(main.port));
    writeFileSync(path.join(workdir, 'dump-compute.sql'), expected);

    const branch = await timed('branch creation and compute start', async () => {
      try {
        const br = await tenant.branchTimeline({ ancestorTimelineId: mainId, ancestorStartLsn: lsn });
        return await startEndpoint(br.timelineId);
      } catch (err) {
        const code = err instanceof Error && 'code' in err ? ` [${String(err.code)}]` : '';
        return assert.fail(`a compute on a branch at ${formatLsn(lsn)} did not start${code}: ${err instanceof Error ? err.message : String(err)}\n${recentLog()}`);
      }
    });
    const actual = await timed('pg_dumpall of the branch and comparison', async () => {
      const dump = await dumpAll(branch.port);
      writeFileSync(path.join(workdir, 'dump-branch.sql'), dump);
      assertSameDump(dump, expected, `pg_dumpall of a branch at ${formatLsn(lsn)} differs from the compute's (both in ${workdir} with STRATA_KEEP_TMP=1)`);
      return dump;
    });
    t.diagnostic(`dumps: ${expected.length} bytes (compute), ${actual.length} bytes (branch)`);

    const check = await timed('pg_amcheck --all --heapallindexed on the branch', () => amcheckAll(branch.port));
    assert.equal(check.exitCode, 0, `pg_amcheck on the branch at ${formatLsn(lsn)} exited ${check.exitCode}:\n${tail(check.stdout + check.stderr, 60)}\n${recentLog()}`);
    await branch.stop();
  });
});
