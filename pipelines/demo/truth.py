"""The simulated world's ground truth at a prediction's instant, and the simulated camera's view.

When a rig's sensors are simulated the demo knows the world they look at (each simulated
source's `world` config), so it can show, beside the detected objects, the objects that were
really there: `fusion.sim.truth.object_list(world, t)` at the prediction's scene time t.

The prediction's timestamp is its fusion tick on the frames' clock. With `clock: unix` that is
scene time itself. With `clock: monotonic` (what the demo runs) the simulated source stamps
frame k, captured at scene time t, with `t - offset`, where offset is that host's Unix time
minus its monotonic time, measured when the source opened; its `wall_time` is t itself. The
fuser keeps both for each reading of a sample (`capture_times[m]`, the stamp, and
`stage_times["capture.<m>"]`, the wall time plus the reading's duration, which is zero for a
camera or LiDAR snapshot), so a sample with a simulated camera or LiDAR reading gives the
sensor's own offset exactly, whichever host it ran on. Without one (the sample is gone, or
only the microphone, whose chunks have a duration, is simulated) the demo uses this host's
offset, right when the sensors run on the demo's host (a local Ray), off by the clocks'
difference otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fusion.detection.boxes import Box3D
from fusion.sample import MODALITY_ORDER, FusedSample, Modality
from fusion.sensors.simulated_config import Clock, SimCameraConfig, SimulatedConfig
from fusion.sim.truth import object_list
from fusion.sim.world import World
from pipelines.demo.render import CameraView
from pipelines.demo.sources import SensorPlan

SNAPSHOT_MODALITIES = (Modality.CAMERA, Modality.LIDAR)  # readings without a duration


@dataclass(frozen=True)
class SimTruth:
    """Ground truth of the world the rig's simulated sensors see.

    Attributes:
        world: the world of the first simulated sensor in modality order (sensors of one rig
            normally share it; if they do not, the truth is that one's).
        clock: what the simulated sources stamp with.
        snapshots: the simulated camera and LiDAR, whose readings give the clock offset.
    """

    world: World
    clock: Clock
    snapshots: tuple[Modality, ...]

    @classmethod
    def of(cls, plans: list[SensorPlan]) -> SimTruth | None:
        """The truth of the simulated world among `plans`, or None when no sensor is simulated."""
        simulated = sorted(
            (p for p in plans if isinstance(p.source, SimulatedConfig)),
            key=lambda p: MODALITY_ORDER.index(p.modality),
        )
        if not simulated:
            return None
        first = simulated[0].source
        assert isinstance(first, SimulatedConfig)
        snapshots = tuple(p.modality for p in simulated if p.modality in SNAPSHOT_MODALITIES)
        return cls(world=World(first.world), clock=first.clock, snapshots=snapshots)

    def scene_time(self, timestamp: float, sample: FusedSample | None) -> float:
        """The scene time of `timestamp` (a tick on the frames' clock); see the module docstring."""
        if self.clock is Clock.UNIX:
            return timestamp
        return timestamp + self._offset(sample)

    def _offset(self, sample: FusedSample | None) -> float:
        """Unix minus monotonic time as the simulated sensors measured it, or as this host does."""
        stamps = sample.capture_times if sample is not None else {}
        walls = sample.stage_times if sample is not None else {}
        for m in self.snapshots:
            if m in stamps and f"capture.{m.value}" in walls:
                return walls[f"capture.{m.value}"] - stamps[m]
        return time.time() - time.monotonic()

    def at(self, timestamp: float, sample: FusedSample | None) -> list[Box3D]:
        """Every object of the world at the tick `timestamp`, in track order ([] when empty)."""
        return object_list(self.world, self.scene_time(timestamp, sample))


def camera_view(plans: list[SensorPlan]) -> CameraView | None:
    """The simulated camera's geometry, or None when the camera is a device (no calibration)."""
    for plan in plans:
        if plan.modality is Modality.CAMERA and isinstance(plan.source, SimCameraConfig):
            return CameraView(width=plan.source.width, height=plan.source.height)
    return None
