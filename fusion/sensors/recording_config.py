"""The config of the `recording` backend (one stream of a recording replayed as a sensor): light.

The source that reads it is `fusion.recording.source.RecordingSource`, which loads Arrow; this
module only declares the backend. It lives here, not in `fusion.recording`, because importing
that package loads Arrow.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fusion.sample import Modality
from fusion.sensors.registry import register_backend
from fusion.sensors.source import Backend, SourceConfig


class RecordingSourceConfig(SourceConfig):
    """Replay one stream of a recording as a sensor (of any modality).

    `sensor_id` picks the stream; empty: the recording's only stream of this modality.
    """

    backend: Literal["recording"] = "recording"
    path: str  # the recording directory (holds manifest.json)
    # Replay the stream as a live device would deliver it: on the wall clock, looping, each frame
    # restamped to when it is handed over. A live rig fed pre-rendered frames (a real rig's cost
    # without the simulator's rendering); every stream of every rig on the same loop, so a rig's
    # streams stay aligned as recorded.
    realtime: bool = False
    # Realtime: seconds of frames the device holds for a reader that falls behind; older ones are
    # skipped and counted (`overrun`), as the simulated device does (`fusion.clock.DeviceBuffer`).
    buffer_s: float = Field(default=1.0, gt=0)


RECORDING = register_backend(
    Backend(
        "recording",
        dict.fromkeys(Modality, RecordingSourceConfig),
        "fusion.recording.source:RecordingSource",
    )
)
