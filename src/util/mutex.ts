/**
 * A FIFO async mutex: one holder at a time, waiters served in arrival order.
 *
 * Used where several async paths touch one resource whose operations must not interleave (a
 * safekeeper timeline's WAL files: appends from the compute, fsyncs, truncation on a new term, peer
 * recovery). The queue is bounded by the number of concurrent callers, which the callers bound.
 */
export class Mutex {
  private locked = false;
  private readonly waiters: (() => void)[] = [];

  get isLocked(): boolean {
    return this.locked;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.locked) await new Promise<void>((resolve) => this.waiters.push(resolve));
    else this.locked = true;
    try {
      return await fn();
    } finally {
      const next = this.waiters.shift();
      if (next !== undefined) next(); // ownership passes straight to the next waiter
      else this.locked = false;
    }
  }
}
