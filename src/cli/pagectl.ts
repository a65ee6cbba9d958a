/**
 * `strata pagectl`: offline inspection of a pageserver's files (Neon's pagectl, read-only).
 *
 *   pagectl layer list <dir>     every layer file of every timeline under a work directory, a
 *                                tenant directory or a timeline directory, one row each
 *   pagectl layer dump <file>    one layer file: its summary, then one line per entry
 *   pagectl metadata <file>      the 512-byte timeline metadata file, decoded
 *
 * Design:
 * - Only the existing readers interpret bytes (LayerFileReader, decodeMetadata, decodeValue), so
 *   the tool sees a file exactly as the pageserver would and refuses what it would refuse. Nothing
 *   is ever written, renamed or removed: unlike the pageserver's loader, which deletes temporary
 *   files and layers beyond disk_consistent_lsn, this tool only reports them.
 * - "All or nothing" output: a command that meets a missing, damaged or foreign file prints one
 *   line on stderr, exits 1, and writes nothing on stdout. `list` and `metadata` therefore build
 *   their whole output before writing it (bounded by the number of layer files, not their size).
 *   `dump` must stream (a layer can hold millions of entries) in bounded memory, so it reads the
 *   file twice: a verification pass (every index block's and every value's CRC, every value
 *   decoded, the summary's counts and ranges against the entries, values back to back), then the
 *   printing pass. Only a file that changes between the two passes can end a dump half-way; that
 *   too ends with an error line and exit status 1.
 * - `list` opens each layer (summary CRC, geometry, real size, fence CRC, name vs. summary, and
 *   tenant/timeline vs. the directory names) but does not read index blocks or values; `dump`
 *   checks everything.
 * - Exit status: 0 success, 1 a file problem (missing, damaged, not what it should be), 2 usage.
 *
 * This file wires the commands; the work is in pagectl/: common.ts, metadata.ts, list.ts, dump.ts.
 */
import type { Writable } from 'node:stream';
import { InvalidArgumentError, type Command } from 'commander';
import { StrataError } from '../util/errors.ts';
import { LineWriter } from './output.ts';
import { isErrno } from './pagectl/common.ts';
import { metadataToJson, metadataToText, readMetadataFile } from './pagectl/metadata.ts';
import { layerListingToJson, layerListingToText, listLayers } from './pagectl/list.ts';
import { runLayerDump, type PagectlStreams } from './pagectl/dump.ts';


function reportError(err: unknown, io: PagectlStreams): number {
  if (err instanceof StrataError) {
    io.stderr.write(`strata pagectl: error: ${err.message}\n`);
    return err.code === 'invalid_input' ? 2 : 1;
  }
  if (isErrno(err)) {
    io.stderr.write(`strata pagectl: error: ${err.message}\n`);
    return 1;
  }
  throw err;
}

async function writeAll(lines: string[], out: Writable): Promise<void> {
  const w = new LineWriter(out);
  for (const line of lines) {
    if (!w.open) break;
    const p = w.line(line);
    if (p !== null) await p;
  }
  await w.end();
}

function parseLimit(text: string): number {
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) throw new InvalidArgumentError('expected a non-negative integer');
  return Number(text);
}

const DUMP_HELP = `
Output: the layer's summary (format version, kind, tenant and timeline, key and LSN ranges, sizes,
index geometry, value kinds), then one line per entry in (key, LSN) order: key in hex, LSN, the
stored value's size in bytes, the value (image; pgRecord with resource manager/record type, xid,
start LSN; clogSetStatus; clearVmBits; multixact...), and the key described.

The whole file is verified before anything is printed (every index block and value CRC, every value
decoded, counts and ranges against the summary); a damaged file prints one error line and exits 1.
--limit only limits what is printed.

--json prints NDJSON (one JSON object per line), so that a large layer streams and each line can be
parsed on its own (jq -c, grep): first {"type":"layer",...} with the summary, then one
{"type":"entry",...} per entry, then {"type":"end","entries":N,"printed":M,"truncated":bool}.
LSNs are "X/X" strings, keys 36 hex digits.`;

const LIST_HELP = `
<dir> may be a pageserver work directory (<dir>/tenants/<tenant>/timelines/<timeline>/), a tenant
directory or a timeline directory. For each timeline: its disk_consistent_lsn and ancestor, then one
row per layer file (kind, LSN range, size, entries, distinct keys, key range), sorted by LSN; then a
total line. Each file's summary and fence are checked (not its index blocks and values: use
"layer dump"); any damaged or foreign file prints one error line and exits 1. Nothing is modified:
temporary files and layers beyond disk_consistent_lsn (marked *) are reported, not removed.
--json prints one JSON document.`;

/** Adds `pagectl layer list|dump` and `pagectl metadata` to the `strata` command line. */
export function registerPagectlCommands(program: Command, setExitCode: (n: number) => void, io: PagectlStreams = { stdout: process.stdout, stderr: process.stderr }): void {
  const pagectl = program
    .command('pagectl')
    .description('inspect pageserver files offline (layer files, timeline metadata); read-only');
  const layer = pagectl.command('layer').description('layer files: list them, dump one');

  layer
    .command('list')
    .description('list the layer files of every timeline under a work, tenant or timeline directory')
    .argument('<dir>', 'pageserver work directory, tenant directory or timeline directory')
    .option('--json', 'print one JSON document')
    .addHelpText('after', LIST_HELP)
    .action(async (dir: string, opts: { json?: boolean }) => {
      try {
        const listing = await listLayers(dir);
        const lines = opts.json ? [JSON.stringify(layerListingToJson(listing), null, 2)] : layerListingToText(listing);
        await writeAll(lines, io.stdout);
        setExitCode(0);
      } catch (err) {
        setExitCode(reportError(err, io));
      }
    });

  layer
    .command('dump')
    .description('print a layer file\'s summary and its entries (key, LSN, value kind, size)')
    .argument('<file>', 'a delta or image layer file')
    .option('--json', 'NDJSON: one JSON object per line (see below)')
    .option('--limit <n>', 'print at most n entries', parseLimit)
    .addHelpText('after', DUMP_HELP)
    .action(async (file: string, opts: { json?: boolean; limit?: number }) => {
      try {
        setExitCode(await runLayerDump(file, opts, io));
      } catch (err) {
        setExitCode(reportError(err, io));
      }
    });

  pagectl
    .command('metadata')
    .description('decode a timeline metadata file (512 bytes) and print its fields')
    .argument('<file>', 'the metadata file, or the timeline directory holding it')
    .option('--json', 'print one JSON object')
    .action(async (file: string, opts: { json?: boolean }) => {
      try {
        const info = await readMetadataFile(file);
        await writeAll(opts.json ? [JSON.stringify(metadataToJson(info), null, 2)] : metadataToText(info), io.stdout);
        setExitCode(0);
      } catch (err) {
        setExitCode(reportError(err, io));
      }
    });
}
