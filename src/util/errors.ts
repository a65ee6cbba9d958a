/**
 * Typed errors for Strata.
 *
 * Every error carries a machine-readable `code` and a `context` object (tenant, timeline, key, LSN,
 * file, ...), so logs and API responses can say exactly what went wrong and where. Messages are
 * written for the person reading a log at 3 a.m.: what failed, where, and (when we know) why.
 */
export type ErrorContext = Record<string, string | number | bigint | boolean | undefined>;

export class StrataError extends Error {
  readonly code: string;
  readonly context: ErrorContext;

  constructor(code: string, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StrataError';
    this.code = code;
    this.context = context;
  }
}

/** Input the caller gave us is malformed (bad LSN text, bad option, unknown field). */
export class InvalidInputError extends StrataError {
  constructor(message: string, context: ErrorContext = {}) {
    super('invalid_input', message, context);
    this.name = 'InvalidInputError';
  }
}

/** An invariant that must hold did not. This is a bug in Strata, never a user error. */
export class AssertionFailedError extends StrataError {
  constructor(message: string, context: ErrorContext = {}) {
    super('assertion_failed', message, context);
    this.name = 'AssertionFailedError';
  }
}

/** TigerBeetle-style assertion: cheap, always on, with a message that says which invariant broke. */
export function assert(condition: unknown, message: string, context: ErrorContext = {}): asserts condition {
  if (!condition) throw new AssertionFailedError(message, context);
}
