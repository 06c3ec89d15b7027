"""Recording and replay of sensor streams as Arrow IPC or Parquet files.

A recording is a directory:

```
manifest.json        schema version, format, creation time, one entry per sensor stream
<sensor_id>.arrow    that sensor's frames (Arrow IPC file; `.parquet` for Parquet)
samples.arrow        optional: FusedSamples (`RecordingWriter.write_sample`)
```

Each stream file holds the `fusion.schema.frame_schema` of its modality, written in record
batches (Parquet: row groups) of at most `batch_frames` frames or about `batch_bytes` bytes,
so writing holds at most one batch per stream in memory. Reading goes batch by batch through
a memory map: an Arrow IPC recording is read without copying its frames.

`RecordingReader.frames()` merges the streams in timestamp order, `Replayer` paces them to
(a multiple of) real time, and the `recording` source backend replays one stream like any
sensor.

Modules: `manifest` (the directory's layout and `manifest.json`), `writer`, `reader` (with
`Replayer`), `source` (the `recording` source backend and the file probes).
"""

from fusion.recording.manifest import MANIFEST, Format, Manifest, SamplesInfo, StreamInfo
from fusion.recording.reader import RecordingReader, Replayer
from fusion.recording.writer import RecordingWriter

__all__ = [
    "MANIFEST",
    "Format",
    "Manifest",
    "RecordingReader",
    "RecordingWriter",
    "Replayer",
    "SamplesInfo",
    "StreamInfo",
]
