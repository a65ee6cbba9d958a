/**
 * Structured logging.
 *
 * Each log line is an event with fields (tenant_id, timeline_id, lsn, file, …), never a sentence
 * with values pasted in, so logs can be filtered by tenant or timeline. `STRATA_LOG_FORMAT=json`
 * prints one JSON object per line; the default is `level message key=value …` for people.
 * `STRATA_LOG` sets the minimum level (debug, info, warn, error; default info). Output is stderr:
 * stdout belongs to command results.
 */
const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type LogLevel = keyof typeof LEVELS;
export type LogFields = Record<string, string | number | bigint | boolean | null | undefined>;

function minLevel(): number {
  const env = process.env['STRATA_LOG'];
  return env !== undefined && env in LEVELS ? LEVELS[env as LogLevel] : LEVELS.info;
}

function render(value: unknown): string {
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'string') return /[\s"=]/.test(value) ? JSON.stringify(value) : value;
  return String(value);
}

export class Logger {
  readonly fields: LogFields;

  constructor(fields: LogFields = {}) {
    this.fields = fields;
  }

  /** A logger whose lines also carry `fields` (e.g. tenant_id, timeline_id). */
  child(fields: LogFields): Logger {
    return new Logger({ ...this.fields, ...fields });
  }

  debug(message: string, fields: LogFields = {}): void { this.log('debug', message, fields); }
  info(message: string, fields: LogFields = {}): void { this.log('info', message, fields); }
  warn(message: string, fields: LogFields = {}): void { this.log('warn', message, fields); }
  error(message: string, fields: LogFields = {}): void { this.log('error', message, fields); }

  log(level: LogLevel, message: string, fields: LogFields): void {
    if (LEVELS[level] < minLevel()) return;
    const all = { ...this.fields, ...fields };
    if (process.env['STRATA_LOG_FORMAT'] === 'json') {
      process.stderr.write(JSON.stringify({ ts: new Date().toISOString(), level, msg: message, ...all },
        (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
      return;
    }
    const parts = Object.entries(all).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${render(v)}`);
    process.stderr.write(`${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${message}${parts.length > 0 ? ' ' + parts.join(' ') : ''}\n`);
  }
}

export const rootLogger = new Logger();
