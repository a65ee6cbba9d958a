/**
 * Rebuilds pg_waldump's description text from Strata's typed record bodies, so tests can check
 * every decoded field against PostgreSQL's own reader (run pg_waldump with TZ=UTC: commit and
 * prepare times are printed in the local zone). `exact` means the whole desc after the record type
 * must match; `prefix` means Strata does not decode everything pg_waldump prints (e.g. invalidation
 * messages), so only the start is compared.
 */
import { formatLsn } from '../../src/postgres/lsn.ts';
import { parseRelMapFile, pgTimestampToUnixUs, MULTIXACT_STATUS_NAMES, type TypedRecord } from '../../src/postgres/records/index.ts';
import type { RelFileNode } from '../../src/postgres/xlogrecord.ts';
import type { PgWaldumpRecord } from './pgwaldump.ts';

const ts = (us: bigint): string => {
  const unixUs = pgTimestampToUnixUs(us);
  const sec = unixUs / 1000000n; const frac = us % 1000000n;
  const d = new Date(Number(sec) * 1000).toISOString();
  return `${d.slice(0, 10)} ${d.slice(11, 19)}.${frac.toString().padStart(6, '0')} UTC`;
};
const forkSuffix = ['', '_fsm', '_vm', '_init'];
const relpath = (r: RelFileNode, fork = 0): string =>
  (r.spcNode === 1664 ? `global/${r.relNode}` : r.spcNode === 1663 ? `base/${r.dbNode}/${r.relNode}` : `pg_tblspc/${r.spcNode}/PG_15_202209061/${r.dbNode}/${r.relNode}`) + forkSuffix[fork];
const hex2 = (n: number): string => '0x' + n.toString(16).toUpperCase().padStart(2, '0');
const rels = (label: string, rs: RelFileNode[]): string => (rs.length ? `; ${label}: ${rs.map((r) => relpath(r)).join(' ')}` : '');
const subx = (xs: number[]): string => (xs.length ? `; subxacts: ${xs.join(' ')}` : '');
const stats = (label: string, ss: { kind: number; dboid: number; objoid: number }[]): string => (ss.length ? `; ${label}dropped stats: ${ss.map((s) => `${s.kind}/${s.dboid}/${s.objoid}`).join(' ')}` : '');

export type Check = { mode: 'exact' | 'prefix'; want: string } | null;
export function expectedDesc(t: TypedRecord): Check {
  const ex = (want: string): Check => ({ mode: 'exact', want });
  const pre = (want: string): Check => ({ mode: 'prefix', want });
  switch (t.rmgr) {
    case 'Transaction': {
      if (t.type === 'COMMIT' || t.type === 'COMMIT_PREPARED') {
        const b = t.body;
        return pre(`${b.twophaseXid ? `${b.twophaseXid}: ` : ''}${ts(b.xactTimeUs)}${rels('rels', b.relfilenodes)}${subx(b.subxacts)}${stats('', b.droppedStats)}`);
      }
      if (t.type === 'ABORT' || t.type === 'ABORT_PREPARED') {
        const b = t.body;
        return ex(`${b.twophaseXid ? `${b.twophaseXid}: ` : ''}${ts(b.xactTimeUs)}${rels('rels', b.relfilenodes)}${subx(b.subxacts)}${stats('', b.droppedStats)}`);
      }
      if (t.type === 'PREPARE') {
        const b = t.body;
        return pre(`gid ${b.gid}: ${ts(b.preparedAtUs)}${rels('rels(commit)', b.commitRels)}${rels('rels(abort)', b.abortRels)}${stats('commit ', b.commitStats)}${stats('abort ', b.abortStats)}${subx(b.subxacts)}`);
      }
      if (t.type === 'ASSIGNMENT') return ex(`xtop ${t.body.xtop}: subxacts: ${t.body.subxacts.join(' ')}`);
      if (t.type === 'INVALIDATION') return pre(t.body.count ? '; inval msgs:' : '');
      return null;
    }
    case 'XLOG': {
      if (t.type === 'CHECKPOINT_SHUTDOWN' || t.type === 'CHECKPOINT_ONLINE') {
        const c = t.body;
        return ex(`redo ${formatLsn(c.redoLsn)}; tli ${c.thisTimeLineId}; prev tli ${c.prevTimeLineId}; fpw ${c.fullPageWrites}; xid ${c.nextXidEpoch}:${c.nextXid32}; oid ${c.nextOid}; multi ${c.nextMulti}; offset ${c.nextMultiOffset}; oldest xid ${c.oldestXid} in DB ${c.oldestXidDb}; oldest multi ${c.oldestMulti} in DB ${c.oldestMultiDb}; oldest/newest commit timestamp xid: ${c.oldestCommitTsXid}/${c.newestCommitTsXid}; oldest running xid ${c.oldestActiveXid}; ${t.type === 'CHECKPOINT_SHUTDOWN' ? 'shutdown' : 'online'}`);
      }
      if (t.type === 'NEXTOID') return ex(`${t.body.nextOid}`);
      if (t.type === 'RESTORE_POINT') return ex(t.body.name);
      if (t.type === 'BACKUP_END') return ex(formatLsn(t.body.startLsn));
      if (t.type === 'FPW_CHANGE') return ex(String(t.body.fullPageWrites));
      if (t.type === 'PARAMETER_CHANGE') {
        const p = t.body;
        return ex(`max_connections=${p.maxConnections} max_worker_processes=${p.maxWorkerProcesses} max_wal_senders=${p.maxWalSenders} max_prepared_xacts=${p.maxPreparedXacts} max_locks_per_xact=${p.maxLocksPerXact} wal_level=${p.walLevelName} wal_log_hints=${p.walLogHints ? 'on' : 'off'} track_commit_timestamp=${p.trackCommitTimestamp ? 'on' : 'off'}`);
      }
      if (t.type === 'END_OF_RECOVERY') return ex(`tli ${t.body.thisTimeLineId}; prev tli ${t.body.prevTimeLineId}; time ${ts(t.body.endTimeUs)}`);
      if (t.type === 'OVERWRITE_CONTRECORD') return ex(`lsn ${formatLsn(t.body.overwrittenLsn)}; time ${ts(t.body.timeUs)}`);
      return ex('');
    }
    case 'Storage':
      if (t.type === 'CREATE') return ex(relpath(t.body.rnode, t.body.forkNum));
      return ex(`${relpath(t.body.rnode)} to ${t.body.blkno} blocks flags ${t.body.flags}`);
    case 'CLOG':
      if (t.type === 'ZEROPAGE') return ex(`page ${t.body.pageno}`);
      return ex(`page ${t.body.pageno}; oldestXact ${t.body.oldestXact}`);
    case 'Database':
      if (t.type === 'CREATE_FILE_COPY') return ex(`copy dir ${t.body.srcTablespaceId}/${t.body.srcDbId} to ${t.body.tablespaceId}/${t.body.dbId}`);
      if (t.type === 'CREATE_WAL_LOG') return ex(`create dir ${t.body.tablespaceId}/${t.body.dbId}`);
      return ex(`dir${t.body.tablespaceIds.map((s) => ` ${s}/${t.body.dbId}`).join('')}`);
    case 'MultiXact':
      if (t.type === 'ZERO_OFF_PAGE' || t.type === 'ZERO_MEM_PAGE') return ex(`${t.body.pageno}`);
      if (t.type === 'CREATE_ID') return ex(`${t.body.mid} offset ${t.body.moff} nmembers ${t.body.nmembers}: ${t.body.members.map((m) => `${m.xid} (${MULTIXACT_STATUS_NAMES[m.status]}) `).join('')}`.trimEnd());
      if (t.type !== 'TRUNCATE_ID') return null;
      return ex(`offsets [${t.body.startTruncOff}, ${t.body.endTruncOff}), members [${t.body.startTruncMemb}, ${t.body.endTruncMemb})`);
    case 'RelMap':
      parseRelMapFile(t.body.data);
      return ex(`database ${t.body.dbId} tablespace ${t.body.tsId} size ${t.body.nbytes}`);
    case 'Standby':
      if (t.type === 'RUNNING_XACTS') {
        const b = t.body;
        return ex(`nextXid ${b.nextXid} latestCompletedXid ${b.latestCompletedXid} oldestRunningXid ${b.oldestRunningXid}${b.xcnt > 0 ? `; ${b.xcnt} xacts: ${b.xids.join(' ')}` : ''}${b.subxidOverflow ? '; subxid ovf' : ''}`);
      }
      if (t.type === 'LOCK') return ex(t.body.locks.map((l) => `xid ${l.xid} db ${l.dbOid} rel ${l.relOid} `).join('').trimEnd());
      return null;
    case 'Heap':
      if (t.type === 'INSERT' || t.type === 'INSERT+INIT') return ex(`off ${t.body.offnum} flags ${hex2(t.body.flags)}`);
      if (t.type === 'DELETE') return pre(`off ${t.body.offnum} flags ${hex2(t.body.flags)} `);
      if (t.type === 'LOCK') return pre(`off ${t.body.offnum}: xid ${t.body.lockingXid}: flags ${hex2(t.body.flags)} `);
      if (t.type === 'UPDATE' || t.type === 'UPDATE+INIT' || t.type === 'HOT_UPDATE' || t.type === 'HOT_UPDATE+INIT') {
        const u = t.body;
        return { mode: 'prefix', want: `off ${u.oldOffnum} xmax ${u.oldXmax} flags ${hex2(u.flags)} ` };
      }
      return null;
    case 'Heap2':
      if (t.type === 'VISIBLE') return ex(`cutoff xid ${t.body.cutoffXid} flags ${hex2(t.body.flags)}`);
      if (t.type === 'LOCK_UPDATED') return pre(`off ${t.body.offnum}: xmax ${t.body.xmax}: flags ${hex2(t.body.flags)} `);
      return ex(`${t.body.ntuples} tuples flags ${hex2(t.body.flags)}`);
  }
}


/** Compares one typed record with pg_waldump's line for it; returns a problem description or null. */
export function checkAgainstDesc(t: TypedRecord, d: PgWaldumpRecord): string | null {
  if (t.rmgr !== d.rmgr || t.type !== d.info) return `type ${t.rmgr}/${t.type} vs pg_waldump ${d.rmgr}/${d.info}`;
  const c = expectedDesc(t);
  if (c === null) return null;
  const actual = d.desc.slice(d.info.length).replace(/^ /, '').trimEnd();
  if (t.rmgr === 'Heap' && (t.type.startsWith('UPDATE') || t.type.startsWith('HOT_UPDATE'))) {
    const u = t.body as { newOffnum: number; newXmax: number };
    if (!actual.endsWith(`; new off ${u.newOffnum} xmax ${u.newXmax}`)) return `new tuple: pg_waldump says ${JSON.stringify(actual)}`;
  }
  const ok = c.mode === 'exact' ? actual === c.want.trimEnd() : actual.startsWith(c.want.trimEnd());
  return ok ? null : `want ${JSON.stringify(c.want)}, pg_waldump says ${JSON.stringify(actual)}`;
}
