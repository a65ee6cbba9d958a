/**
 * Crash-safe file writes.
 *
 * Every file Strata keeps is written the same way: to a temporary name in the same directory,
 * fsynced, renamed over its final name, and then the directory is fsynced so the rename itself is
 * durable. A process killed at any instruction leaves either the old file or the new one, never a
 * torn mix; leftovers carry the `TEMP_SUFFIX` and are removed when the directory is next opened.
 */
import { access, open, rename, unlink, readdir } from 'node:fs/promises';
import { openSync, fsyncSync, closeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';

/** Suffix of files being written. Anything ending in it is garbage after a crash. */
export const TEMP_SUFFIX = '.___temp';

/** A fresh temporary path next to `finalPath`. */
export function tempPathFor(finalPath: string): string {
  return `${finalPath}.${randomBytes(4).toString('hex')}${TEMP_SUFFIX}`;
}

/** fsync a directory so renames and unlinks inside it are durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export function fsyncDirSync(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Writes `data` to `finalPath` atomically and durably (temp → fsync → rename → fsync dir). */
export async function writeFileDurable(finalPath: string, data: Uint8Array): Promise<void> {
  const tmp = tempPathFor(finalPath);
  const fh = await open(tmp, 'wx', 0o644);
  try {
    let written = 0;
    while (written < data.length) {
      const { bytesWritten } = await fh.write(data, written, data.length - written, written);
      written += bytesWritten;
    }
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fh.close();
  await rename(tmp, finalPath);
  await fsyncDir(path.dirname(finalPath));
}

/** Removes leftover temporary files in `dir`; returns their names. */
export async function removeTempFiles(dir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(dir)) {
    if (name.endsWith(TEMP_SUFFIX)) {
      await unlink(path.join(dir, name));
      removed.push(name);
    }
  }
  if (removed.length > 0) await fsyncDir(dir);
  return removed;
}

/** True when the path exists (any type). */
export async function pathExists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}
