"""Labelled training data from the simulated world, as Parquet shards of FusedSamples.

Example i of a split is episode i of `World(seed=split seed)`, seen at one instant inside the
episode (drawn from the seed, late enough that the 1 s audio window lies within it): the
camera frame and the LiDAR sweep at that instant and the microphone's window ending there,
rendered by the simulated sensors of the live rig (`fusion.sensors.simulated`, with their
configs) and fused into a sample by the pipeline's own `fusion.fuser.fuse`, with the same
preprocessors (`make_preprocessor`) as the live pipeline. Labels: the class index and the
object's bounding-box centre in metres (`target_position`; None for 'nothing', which has no
position): those of object 0, the one-object world's view, as the shipped checkpoint was
trained; and `objects`, every object of the scene at the sample's instant
(`fusion.sim.truth.object_list`: class, box centre, size, yaw, velocity, track id), which the
sensors render too. Each row also carries the scene's conditions (`scene` column) for the
evaluation's breakdowns: day or night, weather, range, signal-to-noise ratio (all of object 0).

Layout of an output directory::

    DIR/manifest.json              config, counts, timing
    DIR/<split>/part-00000.parquet  `shard_size` samples each; the FusedSample schema + `scene`

Shards are written to a temporary name and renamed, so an interrupted run leaves only whole
shards, and running the command again renders only the missing ones.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, ValidationError, model_validator
from tqdm import tqdm

from fusion.config import StrictModel
from fusion.errors import InputError, MissingFileError
from fusion.fuser import PreprocessConfig, fuse
from fusion.sample import Frame, FusedSample, Modality
from fusion.schema import samples_to_table, table_to_samples
from fusion.sensors import make_preprocessor
from fusion.sensors.preprocess_config import Preprocessor
from fusion.sensors.simulated import CameraSim, LidarSim, MicrophoneSim
from fusion.sensors.simulated_config import CameraSensor, LidarSensor, MicrophoneSensor
from fusion.sim.truth import object_list
from fusion.sim.world import World, WorldConfig, frame_rng

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SCENE_COLUMN = "scene"
_INSTANT_STREAM = 99


class MicrophoneWindowConfig(MicrophoneSensor):
    """The simulated microphone, and how much of its audio one example holds."""

    window_s: float = Field(default=1.0, gt=0)  # audio per sample, ending at the sample's instant


class SensorsConfig(StrictModel):
    """The simulated sensors, as the live rig's simulated sources configure them: keep them equal
    to the live rig's (configs/pipeline/sim-local.yaml). The preprocessor resizes the camera's
    image to the model's grid."""

    camera: CameraSensor = CameraSensor()
    lidar: LidarSensor = LidarSensor()
    microphone: MicrophoneWindowConfig = MicrophoneWindowConfig()


class SplitConfig(StrictModel):
    seed: int  # the world's seed for this split: splits never share an episode
    samples: int = Field(ge=1)
    # WorldConfig fields this split changes from `data.world`, e.g. a shifted world for
    # evaluation: {night_probability: 0.5, fog_probability: 0.35, rain_probability: 0.35}.
    world: dict[str, Any] = Field(default_factory=dict)


class DataConfig(StrictModel):
    """What `fusion data generate` renders."""

    dir: str = "data/sim"  # default output (and what `fusion train` reads)
    world: WorldConfig = WorldConfig()  # the scene; its seed is replaced by each split's
    splits: dict[str, SplitConfig] = Field(min_length=1)
    shard_size: int = Field(default=500, ge=1)
    workers: int | None = Field(default=None, ge=1)  # None: one per CPU core
    sensors: SensorsConfig = SensorsConfig()
    # Per modality, the preprocessor settings of the live rig (a modality left out: its defaults).
    preprocess: PreprocessConfig = PreprocessConfig()

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        seeds = [s.seed for s in self.splits.values()]
        if len(set(seeds)) != len(seeds):
            shown = ", ".join(f"{k}={s.seed}" for k, s in self.splits.items())
            raise InputError(f"splits must use different seeds, got {shown}")
        for name, split in self.splits.items():
            if "seed" in split.world:
                raise InputError(f"splits.{name}.world.seed: the split's own `seed` sets it")
            try:
                split_world(self, name)
            except ValidationError as err:
                first = err.errors()[0]
                where = "".join(f".{p}" for p in first["loc"])
                raise InputError(f"splits.{name}.world{where}: {first['msg']}") from None
        if self.world.seed != 0:
            raise InputError(
                f"world.seed ({self.world.seed}): give each split its own seed (splits.<name>.seed) instead"
            )
        if self.sensors.microphone.window_s >= self.world.episode_s:
            raise InputError(
                f"sensors.microphone.window_s ({self.sensors.microphone.window_s}) must be shorter than "
                f"world.episode_s ({self.world.episode_s}): each sample's audio lies within one episode"
            )
        return self


def scene_type() -> pa.StructType:
    """The `scene` column: the conditions under which a sample was taken."""
    return pa.struct(
        [
            pa.field("episode", pa.int64()),
            pa.field("night", pa.bool_()),
            pa.field("illumination", pa.float32()),
            pa.field("weather", pa.string()),
            pa.field("visibility_m", pa.float32()),
            pa.field("noise", pa.string()),
            pa.field("noise_dbfs", pa.float32()),
            pa.field("snr_db", pa.float32()),  # object sound over background in the window; NaN: no object
            pa.field("distance_m", pa.float32()),  # horizontal range of the object; NaN: no object
            pa.field("speed_mps", pa.float32()),
        ]
    )


def split_world(config: DataConfig, split: str) -> WorldConfig:
    """The world of one split: `data.world` with the split's overrides and its seed."""
    spec = config.splits[split]
    return WorldConfig.model_validate(config.world.model_dump() | spec.world | {"seed": spec.seed})


class ExampleRenderer:
    """Renders example i of one split: frames from the world, Segments from the preprocessors."""

    def __init__(self, config: DataConfig, *, seed: int, world: WorldConfig | None = None) -> None:
        """`world`: the split's world (`split_world`); default `config.world` with `seed`."""
        self.config = config
        self.seed = seed
        self.world_config = world or config.world.model_copy(update={"seed": seed})
        self.world = World(self.world_config)
        sensors = config.sensors
        self.camera = CameraSim(self.world, sensors.camera)
        self.lidar = LidarSim(self.world, sensors.lidar)
        self.microphone = MicrophoneSim(self.world, sensors.microphone)
        self.preprocessors: dict[Modality, Preprocessor] = {
            m: make_preprocessor(m, config.preprocess.for_modality(m), source=f"data.preprocess.{m.value}")
            for m in Modality
        }
        self.errors: dict[str, int] = {}

    def instant(self, index: int) -> float:
        """The scene time of example `index`: inside episode `index`, after a full audio window."""
        episode_s, window = self.world_config.episode_s, self.config.sensors.microphone.window_s
        u = np.random.default_rng([self.seed, _INSTANT_STREAM, index]).random()
        return index * episode_s + window + u * (episode_s - window) * (1 - 1e-6)

    def frames(self, index: int, t: float) -> tuple[list[Frame], dict[str, Any]]:
        """The three sensors' frames for example `index` at time `t`, and its scene record."""
        state = self.world.state(t)
        image = self.camera.render(t, t, frame_rng(self.seed, self.camera.stream, index))["data"]
        sweep = self.lidar.render(t, t, frame_rng(self.seed, self.lidar.stream, index))["data"]
        sr = self.microphone.sample_rate
        n = round(self.config.sensors.microphone.window_s * sr)
        end = round(t * sr)
        pcm, sig, noise = self.microphone.window(end - n, n)
        frames = [
            Frame(
                modality=Modality.CAMERA, sensor_id="cam0", timestamp=t, wall_time=t, data=image, index=index
            ),
            Frame(
                modality=Modality.LIDAR, sensor_id="lidar0", timestamp=t, wall_time=t, data=sweep, index=index
            ),
            Frame(
                modality=Modality.MICROPHONE,
                sensor_id="mic0",
                timestamp=(end - n) / sr,
                wall_time=(end - n) / sr,
                data=pcm,
                sample_rate=float(sr),
                index=index,
            ),
        ]
        cond = state.conditions
        center = state.center()
        has_object = center is not None
        snr = 10 * math.log10(float(np.mean(sig**2)) / float(np.mean(noise**2))) if has_object else math.nan
        scene = {
            "episode": index,
            "night": cond.night,
            "illumination": cond.illumination,
            "weather": cond.weather.value,
            "visibility_m": cond.visibility_m,
            "noise": cond.noise.value,
            "noise_dbfs": cond.noise_dbfs,
            "snr_db": snr,
            "distance_m": math.hypot(center[0], center[1]) if center is not None else math.nan,
            "speed_mps": math.hypot(*state.velocity[:2]),
        }
        return frames, scene

    def render(self, index: int) -> tuple[FusedSample, dict[str, Any]]:
        """Example `index` as a labelled FusedSample, and its scene record."""
        t = self.instant(index)
        frames, scene = self.frames(index, t)
        state = self.world.state(t)
        sample = fuse(
            {f.modality: f for f in frames},
            self.preprocessors,
            seq=index,
            timestamp=t,
            rig=f"sim-{self.seed}",
            on_error=self._count_error,
            label=state.cls,
            target_position=state.center(),
        )
        return dataclasses.replace(sample, objects=object_list(self.world, t)), scene

    def _count_error(self, modality: Modality, err: ValueError) -> None:
        # e.g. a sweep with no point in range: the modality is missing from that example.
        key = f"{modality.value}: {str(err).split(':')[0]}"
        self.errors[key] = self.errors.get(key, 0) + 1


def samples_table(samples: list[FusedSample], scenes: list[dict[str, Any]]) -> pa.Table:
    """The FusedSample table with the `scene` column appended."""
    table = samples_to_table(samples)
    scene = pa.array(scenes, type=scene_type())
    return table.append_column(pa.field(SCENE_COLUMN, scene_type()), scene)


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class _Shard:
    split: str
    index: int
    start: int
    stop: int

    def path(self, out: Path) -> Path:
        return out / self.split / f"part-{self.index:05d}.parquet"


_RENDERERS: dict[tuple[str, int], ExampleRenderer] = {}


def _render_shard(job: tuple[DataConfig, _Shard, str]) -> tuple[_Shard, int, float, dict[str, int]]:
    """Worker: render one shard and write it (temporary name, then rename)."""
    config, shard, out = job
    seed = config.splits[shard.split].seed
    renderer = _RENDERERS.get((shard.split, seed))
    if renderer is None:
        world = split_world(config, shard.split)
        renderer = _RENDERERS[(shard.split, seed)] = ExampleRenderer(config, seed=seed, world=world)
    renderer.errors = {}
    t0 = time.perf_counter()
    rendered = [renderer.render(i) for i in range(shard.start, shard.stop)]
    table = samples_table([s for s, _ in rendered], [c for _, c in rendered])
    path = shard.path(Path(out))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return shard, shard.stop - shard.start, time.perf_counter() - t0, renderer.errors


def _shards(config: DataConfig) -> list[_Shard]:
    size = config.shard_size
    return [
        _Shard(name, k, start, min(start + size, split.samples))
        for name, split in config.splits.items()
        for k, start in enumerate(range(0, split.samples, size))
    ]


@dataclass
class GenerateReport:
    samples: int  # rendered now (shards already present are skipped)
    skipped: int
    seconds: float
    workers: int
    errors: dict[str, int]

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else math.nan


def generate(
    config: DataConfig, out: str | Path, *, workers: int | None = None, progress: bool = True
) -> GenerateReport:
    """Render every split of `config` into `out` (see the module docstring for the layout)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [s for s in _shards(config) if not s.path(out).is_file()]
    total = sum(s.stop - s.start for s in _shards(config))
    skipped = total - sum(s.stop - s.start for s in todo)
    n_workers = max(1, min(workers or config.workers or os.cpu_count() or 1, len(todo) or 1))
    errors: dict[str, int] = {}
    t0 = time.perf_counter()
    jobs = [(config, s, str(out)) for s in todo]
    with tqdm(total=total, initial=skipped, unit="sample", desc="generate", disable=not progress) as bar:
        for _, n, _, errs in _run(jobs, n_workers):
            bar.update(n)
            for k, v in errs.items():
                errors[k] = errors.get(k, 0) + v
    seconds = time.perf_counter() - t0
    report = GenerateReport(
        samples=total - skipped, skipped=skipped, seconds=seconds, workers=n_workers, errors=errors
    )
    _write_manifest(out, config, report)
    return report


def _run(jobs: list, workers: int) -> Iterator[tuple[_Shard, int, float, dict[str, int]]]:
    if workers == 1:
        yield from map(_render_shard, jobs)
        return
    # spawn, not fork: open3d's and OpenMP's thread pools do not survive a fork.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        yield from pool.imap_unordered(_render_shard, jobs)


def _write_manifest(out: Path, config: DataConfig, report: GenerateReport) -> None:
    path = out / MANIFEST
    previous = json.loads(path.read_text()) if path.is_file() else {}
    runs = [*previous.get("runs", []), {
        "rendered": report.samples,
        "skipped": report.skipped,
        "seconds": round(report.seconds, 2),
        "samples_per_s": round(report.samples_per_s, 2),
        "workers": report.workers,
        "cpu_count": os.cpu_count(),
        "errors": report.errors,
    }]  # fmt: skip
    manifest = {
        "config": config.model_dump(mode="json"),
        "splits": {k: s.samples for k, s in config.splits.items()},
        "runs": runs,
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n")


# --------------------------------------------------------------------------- reading


@dataclass
class LabelledSet:
    """One split read back: FusedSamples and their scene records (column arrays, same order)."""

    samples: list[FusedSample]
    scene: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)


def split_files(data_dir: str | Path, split: str) -> list[Path]:
    """The shards of `split` under `data_dir`, in order; raises naming the path when there are none."""
    folder = Path(data_dir) / split
    files = sorted(folder.glob("part-*.parquet"))
    if not files:
        raise MissingFileError(f"no shards of split {split!r} in {folder} (run `fusion data generate`)")
    return files


def load_split(data_dir: str | Path, split: str, *, limit: int | None = None) -> LabelledSet:
    """Read a split's shards (the first `limit` samples when given)."""
    samples: list[FusedSample] = []
    scenes: list[pa.Table] = []
    for path in split_files(data_dir, split):
        table = pq.read_table(path)
        if SCENE_COLUMN not in table.column_names:
            raise InputError(f"{path}: no {SCENE_COLUMN!r} column; not written by `fusion data generate`")
        samples.extend(table_to_samples(table, source=str(path)))
        scenes.append(table.select([SCENE_COLUMN]))
        if limit is not None and len(samples) >= limit:
            break
    scene = pa.concat_tables(scenes).column(SCENE_COLUMN).combine_chunks()
    columns = {f.name: scene.field(f.name).to_numpy(zero_copy_only=False) for f in scene_type()}
    if limit is not None:
        samples = samples[:limit]
        columns = {k: v[:limit] for k, v in columns.items()}
    for sample in samples:
        if sample.label is None:
            raise InputError(f"{data_dir}/{split}: sample {sample.seq} has no label")
    return LabelledSet(samples=samples, scene=columns)


def read_manifest(data_dir: str | Path) -> Mapping[str, Any]:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise MissingFileError(f"{path}: missing; was {data_dir} written by `fusion data generate`?")
    return json.loads(path.read_text())
