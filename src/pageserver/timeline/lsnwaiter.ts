/**
 * Waiting for an LSN to arrive.
 *
 * A read at LSN L must see every record up to L, so it waits until ingestion has passed L
 * (`last_record_lsn ≥ L`). Branch creation waits the same way for its start LSN. Waiters are
 * kept in a bounded list; advancing the LSN releases every waiter at or below it. A wait ends in
 * one of three ways: the LSN arrives, the timeout expires (WaitLsnTimeoutError naming the LSN,
 * how far ingestion got and how long it waited), or the timeline shuts down.
 */
import type { Lsn } from '../../postgres/lsn.ts';
import { formatLsn } from '../../postgres/lsn.ts';
import { StrataError, type ErrorContext } from '../../util/errors.ts';

export class WaitLsnTimeoutError extends StrataError {
  constructor(message: string, context: ErrorContext) {
    super('wait_lsn_timeout', message, context);
    this.name = 'WaitLsnTimeoutError';
  }
}

interface Waiter {
  lsn: Lsn;
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class LsnWaiter {
  private current: Lsn;
  private readonly waiters: Waiter[] = [];
  private minWaiting: Lsn | null = null;
  private closedError: Error | null = null;
  private readonly maxWaiters: number;
  private readonly context: ErrorContext;

  constructor(opts: { initialLsn: Lsn; maxWaiters: number; context: ErrorContext }) {
    this.current = opts.initialLsn;
    this.maxWaiters = opts.maxWaiters;
    this.context = opts.context;
  }

  get lsn(): Lsn {
    return this.current;
  }

  /** Moves the LSN forward (never back) and releases the waiters it satisfies. */
  advance(lsn: Lsn): void {
    if (lsn <= this.current) return;
    this.current = lsn;
    if (this.minWaiting === null || lsn < this.minWaiting) return;
    let min: Lsn | null = null;
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      if (w.lsn <= lsn) {
        this.waiters.splice(i, 1);
        clearTimeout(w.timer);
        w.resolve();
      } else if (min === null || w.lsn < min) {
        min = w.lsn;
      }
    }
    this.minWaiting = min;
  }

  /** Resolves once the LSN is ≥ `lsn`; rejects after `timeoutMs` or when closed. */
  wait(lsn: Lsn, timeoutMs: number): Promise<void> {
    if (this.closedError !== null) return Promise.reject(this.closedError);
    if (lsn <= this.current) return Promise.resolve();
    if (this.waiters.length >= this.maxWaiters) {
      return Promise.reject(new StrataError('too_many_waiters', `too many requests waiting for WAL (${this.waiters.length}); try again later`, { ...this.context, lsn: formatLsn(lsn) }));
    }
    const startedMs = Date.now();
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        lsn,
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.waiters.indexOf(waiter);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(new WaitLsnTimeoutError(
            `timed out after ${Date.now() - startedMs} ms waiting for WAL up to ${formatLsn(lsn)}; ingested so far: ${formatLsn(this.current)}`,
            { ...this.context, lsn: formatLsn(lsn), lastRecordLsn: formatLsn(this.current), timeoutMs }));
        }, timeoutMs),
      };
      this.waiters.push(waiter);
      if (this.minWaiting === null || lsn < this.minWaiting) this.minWaiting = lsn;
    });
  }

  /** Rejects every waiter and all future waits with `err`. */
  close(err: Error): void {
    this.closedError = err;
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.minWaiting = null;
  }
}
