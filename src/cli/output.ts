/**
 * Buffered writing to stdout for commands that print many lines (waldump prints one per record).
 *
 * console.log per line costs a syscall per record; this collects lines and writes them in 64 KiB
 * batches, waits for 'drain' when the pipe is full (bounded memory), and turns EPIPE (the reader
 * went away, e.g. `| head`) into a quiet stop instead of a stack trace.
 */
import type { Writable } from 'node:stream';

export class LineWriter {
  private parts: string[] = [];
  private pendingBytes = 0;
  private closed = false;
  private readonly flushAtBytes: number;
  private readonly out: Writable;

  constructor(out: Writable, flushAtBytes = 64 * 1024) {
    this.out = out;
    this.flushAtBytes = flushAtBytes;
    out.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') this.closed = true;
      else throw e;
    });
  }

  /** False once the reader has gone away: callers should stop producing output. */
  get open(): boolean {
    return !this.closed;
  }

  /** Adds a line; returns a promise to await when the buffer was handed to a full pipe, else null. */
  line(s: string): Promise<void> | null {
    if (this.closed) return null;
    this.parts.push(s, '\n');
    this.pendingBytes += s.length + 1;
    if (this.pendingBytes >= this.flushAtBytes) return this.flush();
    return null;
  }

  flush(): Promise<void> | null {
    if (this.parts.length === 0 || this.closed) return null;
    const ok = this.out.write(this.parts.join(''));
    this.parts = [];
    this.pendingBytes = 0;
    if (ok) return null;
    return new Promise((resolve) => {
      const done = (): void => {
        this.out.off('drain', done);
        this.out.off('close', done);
        resolve();
      };
      this.out.on('drain', done);
      this.out.on('close', done);
    });
  }

  async end(): Promise<void> {
    await this.flush();
  }
}
