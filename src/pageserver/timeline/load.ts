/**
 * Reopening a timeline directory after a restart (or a crash).
 *
 * The metadata file is the truth: `disk_consistent_lsn` says how much WAL is in layer files.
 * Everything else in the directory is checked against it:
 * - temporary files (`*.___temp`) are leftovers of writes that never completed: removed;
 * - layer files holding data beyond disk_consistent_lsn (a delta whose range ends after
 *   disk_consistent_lsn + 1, an image above it) were written by a flush whose metadata update
 *   never happened: removed, because ingestion resumes at disk_consistent_lsn and will write
 *   that range again;
 * - every other layer file is opened (summary and index fence checked) and added to the map.
 *   A layer that fails its checks makes the timeline Broken with the reason, instead of serving
 *   reads that might need it.
 * Unknown files are left alone and logged.
 */
import { readdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import { formatLsn } from '../../postgres/lsn.ts';
import { TEMP_SUFFIX, fsyncDir } from '../../util/durable.ts';
import { parseLayerFileName } from '../../storage/layerfile/format.ts';
import { openLayerFile } from './layerfiles.ts';
import type { Timeline } from './timeline.ts';

export interface LoadReport {
  layersLoaded: number;
  tempFilesRemoved: string[];
  futureLayersRemoved: string[];
  unknownFiles: string[];
}

/** Scans the timeline's directory into its layer map. The timeline is still Loading. */
export async function loadTimelineLayers(timeline: Timeline): Promise<LoadReport> {
  const report: LoadReport = { layersLoaded: 0, tempFilesRemoved: [], futureLayersRemoved: [], unknownFiles: [] };
  const dcl = timeline.diskConsistentLsn;
  const names = (await readdir(timeline.dir)).sort();
  const toOpen: { name: string; start: bigint }[] = [];
  for (const name of names) {
    if (name === 'metadata') continue;
    if (name.endsWith(TEMP_SUFFIX)) {
      await unlink(path.join(timeline.dir, name));
      report.tempFilesRemoved.push(name);
      continue;
    }
    const parsed = parseLayerFileName(name);
    if (parsed === null) {
      report.unknownFiles.push(name);
      continue;
    }
    const future = parsed.kind === 'delta' ? parsed.lsnRange.end > dcl + 1n : parsed.lsnRange.start > dcl;
    if (future) {
      await unlink(path.join(timeline.dir, name));
      report.futureLayersRemoved.push(name);
      continue;
    }
    toOpen.push({ name, start: parsed.lsnRange.start });
  }
  if (report.tempFilesRemoved.length > 0 || report.futureLayersRemoved.length > 0) await fsyncDir(timeline.dir);

  toOpen.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  for (const { name } of toOpen) {
    timeline.layers.addHistoric(openLayerFile(timeline, name));
    report.layersLoaded++;
  }
  for (const name of report.tempFilesRemoved) timeline.log.info('removed temporary file left by an interrupted write', { file: name });
  for (const name of report.futureLayersRemoved) {
    timeline.log.info('removed layer file beyond disk_consistent_lsn (its WAL will be ingested again)', { file: name, disk_consistent_lsn: formatLsn(dcl) });
  }
  for (const name of report.unknownFiles) timeline.log.warn('unknown file in timeline directory left alone', { file: name });
  return report;
}
