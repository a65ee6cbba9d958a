/**
 * pagectl's shared pieces: its error type, file-system helpers that turn errno into one clear
 * line, and opening a layer file the way the pageserver would (checked against the directory's ids).
 */
import { type Stats } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { formatLsn, type Lsn } from '../../postgres/lsn.ts';
import { BlockCache } from '../../storage/layerfile/blockcache.ts';
import { FdCache } from '../../storage/layerfile/fdcache.ts';
import { LayerFileReader } from '../../storage/layerfile/reader.ts';
import { StrataError } from '../../util/errors.ts';
import { tryParseId } from '../../util/ids.ts';

// ---------------------------------------------------------------------------------------------
// Errors and small helpers.

/** A file or directory that is not what pagectl was asked to read. Exit status 1. */
export class PagectlError extends StrataError {
  constructor(message: string, context: Record<string, string | number | undefined> = {}) {
    super('pagectl', message, context);
    this.name = 'PagectlError';
  }
}

/** Bounds on what one invocation reads (a directory with more is refused, not half-listed). */
export const MAX_TIMELINES = 100_000;
export const MAX_LAYER_FILES = 1_000_000;

/** Turns an fs error into one readable line naming the path. */
export function fsErrorMessage(err: NodeJS.ErrnoException, p: string): string {
  switch (err.code) {
    case 'ENOENT': return `${p}: no such file or directory`;
    case 'EACCES': return `${p}: permission denied`;
    case 'EISDIR': return `${p} is a directory, expected a file`;
    case 'ENOTDIR': return `${p}: a component of the path is not a directory`;
    default: return `${p}: ${err.message}`;
  }
}

export function isErrno(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string' && !(err instanceof StrataError);
}

export async function statOrNull(p: string): Promise<Stats | null> {
  try {
    return await stat(p);
  } catch (err) {
    if (isErrno(err) && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) return null;
    throw err;
  }
}

export async function statOrFail(p: string): Promise<Stats> {
  try {
    return await stat(p);
  } catch (err) {
    if (isErrno(err)) throw new PagectlError(fsErrorMessage(err, p), { path: p });
    throw err;
  }
}

/** "[0/14EE6C9, 0/16B3D81)" for a delta, "0/14EE6C8" for an image. */
export function lsnRangeText(kind: 'delta' | 'image', start: Lsn, end: Lsn): string {
  return kind === 'image' ? formatLsn(start) : `[${formatLsn(start)}, ${formatLsn(end)})`;
}

/** The tenant and timeline ids of a path laid out as `…/tenants/<t>/timelines/<tl>/<file>`, else null. */
export function idsFromLayerPath(filePath: string): { tenantId: string; timelineId: string } | null {
  const abs = path.resolve(filePath);
  const timelineDir = path.dirname(abs);
  const timelinesDir = path.dirname(timelineDir);
  const tenantDir = path.dirname(timelinesDir);
  const tenantsDir = path.dirname(tenantDir);
  if (path.basename(timelinesDir) !== 'timelines' || path.basename(tenantsDir) !== 'tenants') return null;
  const timelineId = tryParseId(path.basename(timelineDir));
  const tenantId = tryParseId(path.basename(tenantDir));
  return timelineId === null || tenantId === null ? null : { tenantId, timelineId };
}

export function openReader(filePath: string, expect: { tenantId: string; timelineId: string } | null): LayerFileReader {
  // list opens one file at a time and dump reads index blocks into the reader's private buffer,
  // so the caches only need to satisfy their own minimums.
  const opts = { blockCache: new BlockCache({ maxBytes: 4 * 8192 }), fdCache: new FdCache({ maxOpenFiles: 2 }) };
  try {
    return LayerFileReader.open(filePath, expect === null ? opts : { ...opts, expect });
  } catch (err) {
    if (isErrno(err)) throw new PagectlError(fsErrorMessage(err, filePath), { path: filePath });
    throw err;
  }
}
