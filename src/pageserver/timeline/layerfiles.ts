/**
 * The timeline's side of layer files: writing a frozen in-memory layer as an L0 delta file, and
 * opening a layer file of the timeline's directory for the layer map.
 *
 * An L0 delta covers every key (KEY_MIN..KEY_MAX) and the frozen layer's LSN range. The writer
 * does the crash-safe dance (temp → fsync → rename → fsync dir) and checks what it wrote; the
 * reader checks the file's summary and index fence when it is opened.
 */
import path from 'node:path';
import { KEY_MAX, KEY_MIN } from '../../storage/key.ts';
import type { InMemoryLayer } from '../../storage/inmemorylayer.ts';
import type { LayerDesc, ReconstructState } from '../../storage/layer.ts';
import type { HistoricLayer } from '../../storage/layermap.ts';
import { LayerFileReader } from '../../storage/layerfile/reader.ts';
import { LayerFileWriter } from '../../storage/layerfile/writer.ts';
import type { Key } from '../../storage/key.ts';
import type { Lsn } from '../../postgres/lsn.ts';
import { assert } from '../../util/errors.ts';
import type { Timeline } from './timeline.ts';

/** A layer file of a timeline, as the layer map holds it. */
export class LayerFileHandle implements HistoricLayer {
  readonly fileName: string;
  readonly reader: LayerFileReader;

  constructor(fileName: string, reader: LayerFileReader) {
    this.fileName = fileName;
    this.reader = reader;
  }

  get desc(): LayerDesc {
    return this.reader.desc;
  }

  get sizeBytes(): number {
    return this.reader.sizeBytes;
  }

  getValueReconstructData(key: Key, lsnFloor: Lsn, lsnEnd: Lsn, state: ReconstructState): boolean {
    return this.reader.getValueReconstructData(key, lsnFloor, lsnEnd, state);
  }

  indexEntries(): Iterable<{ key: Key; lsn: Lsn }> {
    return this.reader.indexEntries();
  }

  close(): void {
    this.reader.close();
  }
}

export function openLayerFile(timeline: Timeline, fileName: string): LayerFileHandle {
  const reader = LayerFileReader.open(path.join(timeline.dir, fileName), {
    blockCache: timeline.resources.blockCache,
    fdCache: timeline.resources.fdCache,
    expect: { tenantId: timeline.tenantId, timelineId: timeline.timelineId },
  });
  return new LayerFileHandle(fileName, reader);
}

export async function writeInMemoryLayer(timeline: Timeline, layer: InMemoryLayer): Promise<LayerFileHandle> {
  assert(layer.endLsn !== null, 'only a frozen layer can be written', timeline.context());
  const writer = await LayerFileWriter.create({
    dir: timeline.dir,
    kind: 'delta',
    tenantId: timeline.tenantId,
    timelineId: timeline.timelineId,
    keyRange: { start: KEY_MIN, end: KEY_MAX },
    lsnRange: { start: layer.startLsn, end: layer.endLsn },
  });
  try {
    for (const entry of layer.sortedEntries()) {
      const pending = writer.put(entry.key, entry.lsn, entry.encoded);
      if (pending !== undefined) await pending;
    }
    const info = await writer.finish();
    assert(info.entryCount === layer.entryCount, 'layer file entry count differs from the in-memory layer', timeline.context({ file: info.fileName }));
    return openLayerFile(timeline, info.fileName);
  } catch (err) {
    await writer.abort().catch(() => undefined);
    throw err;
  }
}
