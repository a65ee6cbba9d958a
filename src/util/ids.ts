/**
 * Tenant and timeline identifiers.
 *
 * Like Neon, a tenant id and a timeline id are 16 random bytes, written as 32 hex digits. Strata
 * keeps them as strings in their canonical form (lower-case hex) everywhere in memory, so ids can be
 * compared with `===`, used as Map keys and joined into paths without normalising at each use.
 * The invariant is enforced at the edges: anything arriving from outside (HTTP paths, CLI options,
 * file names) goes through `parseId`, which accepts either case and returns lower case; bytes read
 * from binary files go through `idFromBytes`. Both kinds share one representation; the `what`
 * argument only makes error messages say which one was malformed.
 */
import { randomBytes } from 'node:crypto';
import { InvalidInputError } from './errors.ts';

export type TenantId = string;
export type TimelineId = string;

export const ID_BYTES = 16;
export const ID_HEX_CHARS = 32;

const ID_TEXT = /^[0-9a-fA-F]{32}$/;
const CANONICAL_ID = /^[0-9a-f]{32}$/;

/** A fresh random id (lower-case hex). */
export function generateId(): string {
  return randomBytes(ID_BYTES).toString('hex');
}

/** Validates and canonicalises id text (upper- or lower-case hex → lower case). */
export function parseId(text: string, what: 'tenant' | 'timeline'): string {
  if (typeof text !== 'string' || !ID_TEXT.test(text)) {
    const shown = typeof text === 'string' ? `"${text.length > 80 ? text.slice(0, 80) + '…' : text}"` : String(typeof text);
    throw new InvalidInputError(`invalid ${what} id ${shown}: expected ${ID_HEX_CHARS} hex digits`, { [`${what}Id`]: typeof text === 'string' ? text.slice(0, 80) : undefined });
  }
  return text.toLowerCase();
}

/** Like parseId, but null for text that is not an id (directory scans skip such entries). */
export function tryParseId(text: string): string | null {
  return ID_TEXT.test(text) ? text.toLowerCase() : null;
}

/** True if `text` is already a canonical (lower-case, 32 hex digits) id. */
export function isCanonicalId(text: string): boolean {
  return CANONICAL_ID.test(text);
}

/** The 16 bytes of a canonical id. */
export function idToBytes(id: string): Uint8Array {
  if (!CANONICAL_ID.test(id)) {
    throw new InvalidInputError(`invalid id "${id}": expected ${ID_HEX_CHARS} lower-case hex digits`, { id });
  }
  return new Uint8Array(Buffer.from(id, 'hex'));
}

/** The canonical id text of 16 bytes. */
export function idFromBytes(bytes: Uint8Array): string {
  if (bytes.length !== ID_BYTES) {
    throw new InvalidInputError(`invalid id bytes: expected ${ID_BYTES} bytes, got ${bytes.length}`, { lengthBytes: bytes.length });
  }
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('hex');
}
