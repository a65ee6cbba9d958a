/**
 * Shared types of the TypeScript WAL redo (src/redo/): the per-block redo function every resource
 * manager implements, and the one error type they throw.
 *
 * A redo function sees exactly one block of one record at a time. The caller owns block lookup,
 * full-page images and page copies; the function only transforms the page it is handed (so it can
 * be used the same way by the offline verifier and, later, by the pageserver's reconstruction).
 * When the function cannot reproduce PostgreSQL's result exactly it must throw instead of
 * guessing: a wrong page is worse than a missing one.
 */
import type { DecodedRecord } from '../postgres/xlogrecord.ts';
import { FORK_NAMES } from '../postgres/xlogrecord.ts';
import { formatLsn, type Lsn } from '../postgres/lsn.ts';
import { recordTypeName, rmgrName } from '../postgres/rmgr.ts';
import { StrataError, type ErrorContext } from '../util/errors.ts';

/**
 * Applies one record's change to one block. `page` is the block's current content (8192 bytes, a
 * private copy the function may write), or a zeroed 8192-byte buffer when the block reference has
 * willInit (the caller zeroes it). `blockId` is the block reference id inside the record. Must set
 * the page LSN to `endLsn` exactly where PostgreSQL's redo sets it. Throws RedoError
 * ('redo_failed' / 'redo_unsupported') naming rmgr, record type, LSN and block on anything it
 * cannot do exactly.
 */
export type BlockRedoFn = (page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn) => void;

export const REDO_FAILED = 'redo_failed';
export const REDO_UNSUPPORTED = 'redo_unsupported';
export type RedoErrorCode = typeof REDO_FAILED | typeof REDO_UNSUPPORTED;

/**
 * Redo of one record (optionally: one block of it) failed ('redo_failed': the record or the page is
 * not what the redo expects) or is not implemented ('redo_unsupported'). The message and context
 * name the rmgr, record type, record LSN (X/X), block ref id and relation/fork/block.
 */
export class RedoError extends StrataError {
  constructor(code: RedoErrorCode, rec: DecodedRecord, blockId: number | undefined, reason: string, options?: { cause?: unknown }) {
    const rmgr = rmgrName(rec.rmid);
    const recordType = recordTypeName(rec.rmid, rec.info);
    const lsn = formatLsn(rec.lsn);
    const context: ErrorContext = { rmgr, recordType, lsn, reason };
    let where = '';
    if (blockId !== undefined) {
      context['blockId'] = blockId;
      const b = rec.blocks.find((x) => x.id === blockId);
      if (b !== undefined) {
        const rel = `${b.rnode.spcNode}/${b.rnode.dbNode}/${b.rnode.relNode}`;
        const fork = FORK_NAMES[b.forkNum] ?? `fork${b.forkNum}`;
        context['rel'] = rel;
        context['fork'] = fork;
        context['blkno'] = b.blkno;
        where = `, block ref #${blockId} (rel ${rel} fork ${fork} blk ${b.blkno})`;
      } else {
        where = `, block ref #${blockId} (not in the record)`;
      }
    }
    const what = code === REDO_UNSUPPORTED ? 'redo not supported' : 'redo failed';
    super(code, `${what} for ${rmgr}/${recordType} record at ${lsn}${where}: ${reason}`, context, options);
    this.name = 'RedoError';
  }
}

/** Shorthand: a 'redo_failed' RedoError. */
export function redoFailed(rec: DecodedRecord, blockId: number | undefined, reason: string, cause?: unknown): RedoError {
  return new RedoError(REDO_FAILED, rec, blockId, reason, cause === undefined ? undefined : { cause });
}

/** Shorthand: a 'redo_unsupported' RedoError. */
export function redoUnsupported(rec: DecodedRecord, blockId: number | undefined, reason: string): RedoError {
  return new RedoError(REDO_UNSUPPORTED, rec, blockId, reason);
}
