"""The preprocessing contract, one Frame in and one model-ready Segment out, and its settings.

Each modality has one preprocessor class with a config, registered with
`fusion.sensors.registry.register_preprocessor` and built by `make_preprocessor`. They are pure
functions of the frame (and of a seed, for LiDAR sampling), vectorized with no Python loop over
pixels, samples or points, and raise ValueError naming the sensor when a frame cannot be used.

The settings live here, apart from the preprocessors (`fusion.sensors.preprocessors`), so a
config is validated without loading OpenCV, librosa or open3d.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Protocol

from pydantic import Field, Strict, model_validator

from fusion.config import StrictModel
from fusion.errors import InputError
from fusion.sample import Frame, Modality, Segment

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Preprocessor(Protocol):
    modality: Modality

    def __call__(self, frame: Frame) -> Segment:
        """Turn one frame (for audio: the window the synchronizer cut) into a Segment."""
        ...


class Normalize(StrEnum):
    """How camera pixel values are scaled for the model."""

    UNIT = "unit"  # [0, 1]
    IMAGENET = "imagenet"  # (x - mean) / std with the ImageNet RGB statistics


class CameraPreprocessConfig(StrictModel):
    height: Annotated[int, Field(gt=0)] = 64  # model grid rows
    width: Annotated[int, Field(gt=0)] = 64  # model grid columns
    normalize: Annotated[Normalize, Strict(False)] = Normalize.UNIT
    # Pixels per grid cell along each side (space-to-depth): the image is resized to
    # (height * patch, width * patch) and each patch x patch block becomes one row of
    # 3 * patch^2 values. More detail for the same number of byte-array rows: the rows set the
    # cross-attention's cost, the channels hardly do.
    patch: Annotated[int, Field(ge=1, le=8)] = 1

    @property
    def channels(self) -> int:
        """Values per grid cell: 3 * patch^2 (RGB of each pixel of the patch)."""
        return 3 * self.patch**2


class MicrophonePreprocessConfig(StrictModel):
    sample_rate: Annotated[int, Field(gt=0)] = 16000  # frames must arrive at this rate
    window_s: Annotated[float, Field(gt=0)] = 1.0  # audio per fusion window
    n_fft: Annotated[int, Field(gt=0)] = 512
    # 31 ms. With n_fft 512 and no centre padding, a 1 s window at 16 kHz gives exactly 32 frames
    # (1 + (16000 - 512) // 496), the sensor-small model's microphone grid of 32 x 32.
    hop_length: Annotated[int, Field(gt=0)] = 496
    n_mels: Annotated[int, Field(gt=0)] = 32
    fmin: Annotated[float, Field(ge=0)] = 20.0
    fmax: Annotated[float, Field(gt=0)] | None = None  # None: sample_rate / 2
    frames: Annotated[int, Field(gt=0)] | None = None  # time frames T; None: as many as window_s holds

    @model_validator(mode="after")
    def _consistent(self) -> MicrophonePreprocessConfig:
        nyquist = self.sample_rate / 2
        top = nyquist if self.fmax is None else self.fmax
        if top > nyquist:
            raise InputError(
                f"fmax={self.fmax} is above the Nyquist frequency {nyquist} of sample_rate={self.sample_rate}"
            )
        if self.fmin >= top:
            raise InputError(f"fmin={self.fmin} must be below fmax={top}")
        if self.frames is None and self.window_samples < self.n_fft:
            raise InputError(
                f"window_s={self.window_s} holds {self.window_samples} samples, fewer than n_fft={self.n_fft}"
            )
        return self

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate)

    @property
    def num_frames(self) -> int:
        """T, the spectrogram frames per window (STFT without centre padding)."""
        if self.frames is not None:
            return self.frames
        return 1 + (self.window_samples - self.n_fft) // self.hop_length

    @property
    def span_samples(self) -> int:
        """The newest samples the T frames cover exactly: n_fft + (T - 1) * hop_length."""
        return self.n_fft + (self.num_frames - 1) * self.hop_length


class LidarSampling(StrEnum):
    """How a sweep is cut down to the point budget."""

    RANDOM = "random"  # uniform without replacement: cheap, keeps density
    FARTHEST = "farthest"  # farthest point sampling: even coverage of the scene


class LidarPreprocessConfig(StrictModel):
    range_m: float = Field(default=50.0, gt=0)  # keep |x|, |y| <= range_m; also the position scale
    z_min: float = -3.0  # keep z in [z_min, z_max] metres (sensor frame)
    z_max: float = 5.0
    voxel_size: float = Field(default=0.2, ge=0)  # metres; 0 disables voxel down-sampling
    max_points: int = Field(default=1024, ge=1)  # point budget per sweep
    sampling: Annotated[LidarSampling, Strict(False)] = LidarSampling.RANDOM
    seed: int = Field(default=0, ge=0)  # with the frame index, fixes which points are kept
    # Divides intensity into [0, 1]: 255 for Velodyne's 8-bit returns. None: per sweep, 1 when
    # every intensity is already <= 1 (KITTI reflectance), else 255.
    intensity_scale: float | None = Field(default=255.0, gt=0)

    @model_validator(mode="after")
    def _z_range(self) -> LidarPreprocessConfig:
        if self.z_max <= self.z_min:
            raise InputError(f"z_max ({self.z_max}) must be above z_min ({self.z_min})")
        return self
