"""ROS messages to Frame payloads, and back.

Decoding follows the Frame contracts of `fusion.sample`: images become [H, W, 3] uint8 RGB,
point clouds [N, 4] float32 (x, y, z, intensity; non-finite points are left for the source to
drop and count), audio mono float32 PCM in [-1, 1]. What a message cannot give raises
`MessageError` with a short `reason` (the source's skip counter) and what was wrong.

Encoding (`image_message`, `cloud_message`, `audio_messages`) writes what fusion records: rgb8
images, x y z intensity float32 clouds, F32LE audio, so a recording round-trips losslessly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import velodyne_decoder as vd

from fusion.errors import InputError
from fusion.sensors.ros.config import SampleFormat
from fusion.sensors.ros.types import AUDIO_DATA, AUDIO_DATA_STAMPED, AUDIO_INFO, IMAGE, POINT_CLOUD2
from fusion.sensors.velodyne.packets import packet_problem


class MessageError(InputError):
    """One message cannot become a frame; `reason` is the counter it is skipped under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# --------------------------------------------------------------------------- images

_BAYER = {  # ROS names the pattern from the first row, OpenCV from the second (as cv_bridge maps them)
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}


@dataclass(frozen=True)
class _Layout:
    channels: int
    bits: int  # per channel: 8 or 16
    to_rgb: int | None  # cv2 conversion code after scaling to 8 bits; None: already RGB


_IMAGE_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(3, 8, None),
    "bgr8": _Layout(3, 8, cv2.COLOR_BGR2RGB),
    "rgba8": _Layout(4, 8, cv2.COLOR_RGBA2RGB),
    "bgra8": _Layout(4, 8, cv2.COLOR_BGRA2RGB),
    "mono8": _Layout(1, 8, cv2.COLOR_GRAY2RGB),
    "8UC1": _Layout(1, 8, cv2.COLOR_GRAY2RGB),
    "8UC3": _Layout(3, 8, cv2.COLOR_BGR2RGB),  # OpenCV's own order, as cv_bridge reads it
    "8UC4": _Layout(4, 8, cv2.COLOR_BGRA2RGB),
    "rgb16": _Layout(3, 16, None),
    "bgr16": _Layout(3, 16, cv2.COLOR_BGR2RGB),
    "rgba16": _Layout(4, 16, cv2.COLOR_RGBA2RGB),
    "bgra16": _Layout(4, 16, cv2.COLOR_BGRA2RGB),
    "mono16": _Layout(1, 16, cv2.COLOR_GRAY2RGB),
    "16UC1": _Layout(1, 16, cv2.COLOR_GRAY2RGB),
    "yuv422": _Layout(2, 8, cv2.COLOR_YUV2RGB_UYVY),  # ROS's yuv422 is UYVY
    "uyvy": _Layout(2, 8, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": _Layout(2, 8, cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": _Layout(2, 8, cv2.COLOR_YUV2RGB_YUY2),
    **{name: _Layout(1, 8, code) for name, code in _BAYER.items()},
}
IMAGE_ENCODINGS = frozenset(_IMAGE_LAYOUTS)


def image_rgb(msg: Any) -> np.ndarray:
    """A sensor_msgs/Image as [H, W, 3] uint8 RGB.

    Rows may be padded (`step` > width * pixel bytes). 16-bit channels keep their high byte:
    a fixed scale, the same for every frame, so brightness does not flicker with content.
    """
    layout = _IMAGE_LAYOUTS.get(msg.encoding)
    if layout is None:
        raise MessageError(
            "unsupported_encoding",
            f"image encoding {msg.encoding!r} (supported: {', '.join(sorted(_IMAGE_LAYOUTS))})",
        )
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = w * layout.channels * layout.bits // 8
    data = np.asarray(msg.data, dtype=np.uint8)
    if h == 0 or w == 0 or step < row_bytes or len(data) < h * step:
        raise MessageError(
            "bad_message", f"{h}x{w} {msg.encoding} image with step {step} in {len(data)} bytes"
        )
    rows = data[: h * step].reshape(h, step)[:, :row_bytes]
    if layout.bits == 16:
        wide = np.ascontiguousarray(rows).view(">u2" if msg.is_bigendian else "<u2")
        rows = (wide >> 8).astype(np.uint8)
    pixels = np.ascontiguousarray(rows).reshape(h, w, layout.channels)
    if layout.to_rgb is None:
        return pixels
    if layout.channels == 1:
        pixels = pixels[:, :, 0]
    return np.ascontiguousarray(cv2.cvtColor(pixels, layout.to_rgb))


def compressed_rgb(msg: Any) -> np.ndarray:
    """A sensor_msgs/CompressedImage (JPEG, PNG, ... what OpenCV decodes) as [H, W, 3] uint8 RGB."""
    fmt = str(msg.format)
    if "compressedDepth" in fmt:
        raise MessageError(
            "unsupported_encoding", f"compressed image format {fmt!r} (depth images are not camera frames)"
        )
    bgr = cv2.imdecode(np.asarray(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise MessageError(
            "decode_error", f"{len(msg.data)} bytes of {fmt or 'compressed'} image do not decode"
        )
    # image_transport compresses colour images as bgr8, whatever the original encoding said.
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def image_message(types: Any, rgb: np.ndarray, *, header: Any) -> Any:
    """An rgb8 sensor_msgs/Image of [H, W, 3] uint8 RGB."""
    h, w, _ = rgb.shape
    return types[IMAGE](
        header=header,
        height=h,
        width=w,
        encoding="rgb8",
        is_bigendian=0,
        step=w * 3,
        data=np.ascontiguousarray(rgb).reshape(-1),
    )


# --------------------------------------------------------------------------- point clouds

_POINT_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
INTENSITY_FIELDS = ("intensity", "i", "reflectivity")  # the first one a cloud has is used


def cloud_points(msg: Any) -> np.ndarray:
    """A sensor_msgs/PointCloud2 as [N, 4] float32 x, y, z, intensity (0 when it has none).

    Any field order, datatype and endianness; `point_step` and `row_step` padding is skipped.
    """
    fields = {f.name: f for f in msg.fields}
    missing = [n for n in "xyz" if n not in fields]
    if missing:
        raise MessageError(
            "unsupported_fields",
            f"point cloud without field(s) {', '.join(missing)} (fields: {', '.join(fields)})",
        )
    intensity = next((n for n in INTENSITY_FIELDS if n in fields), None)
    names = ["x", "y", "z", *([intensity] if intensity else [])]
    order = ">" if msg.is_bigendian else "<"
    formats, offsets = [], []
    for name in names:
        f = fields[name]
        if f.datatype not in _POINT_TYPES:
            raise MessageError(
                "unsupported_fields", f"point field {name!r} has unknown datatype {f.datatype}"
            )
        formats.append(order + _POINT_TYPES[f.datatype])
        offsets.append(int(f.offset))
    step, h, w = int(msg.point_step), int(msg.height), int(msg.width)
    try:
        dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step})
    except ValueError as err:  # a field past the end of the point
        raise MessageError("bad_message", f"point fields do not fit point_step {step}: {err}") from None
    data = np.asarray(msg.data, dtype=np.uint8)
    row_step = int(msg.row_step)
    if row_step < w * step or len(data) < h * row_step:
        raise MessageError(
            "bad_message", f"{h}x{w} points of {step} bytes with row_step {row_step} in {len(data)} bytes"
        )
    rows = data[: h * row_step].reshape(h, row_step)[:, : w * step]
    points = np.ascontiguousarray(rows).view(dtype).reshape(-1)
    out = np.zeros((len(points), 4), dtype=np.float32)
    for column, name in enumerate(names):
        out[:, column] = points[name]
    return out


def cloud_message(types: Any, points: np.ndarray, *, header: Any) -> Any:
    """An unordered (height 1) sensor_msgs/PointCloud2 of [N, 4] float32 x, y, z, intensity."""
    field = types["sensor_msgs/msg/PointField"]
    n = len(points)
    return types[POINT_CLOUD2](
        header=header,
        height=1,
        width=n,
        fields=[
            field(name=name, offset=4 * i, datatype=7, count=1)
            for i, name in enumerate(("x", "y", "z", "intensity"))
        ],
        is_bigendian=False,
        point_step=16,
        row_step=16 * n,
        data=np.ascontiguousarray(points, dtype="<f4").view(np.uint8).reshape(-1),
        is_dense=bool(np.isfinite(points).all()),
    )


def decode_scan(decoder: vd.ScanDecoder, msg: Any, stamp_s: float) -> tuple[np.ndarray, list[str]]:
    """A velodyne_msgs/VelodyneScan as [N, 4] float32 points, and what was wrong with any packet left out.

    Packets are checked before they reach the decoder (`velodyne_packets.packet_problem`).
    """
    packets, problems = [], []
    for packet in msg.packets:
        data = np.asarray(packet.data, dtype=np.uint8)
        problem = packet_problem(data.tobytes())
        if problem is not None:
            problems.append(problem)
            continue
        packets.append(vd.VelodynePacket(stamp_s, data))
    if not packets:
        raise MessageError("bad_message", f"scan of {len(msg.packets)} packets has no usable one")
    try:
        _, cloud = decoder.decode(vd.PacketVector(packets))
    except RuntimeError as err:  # e.g. packets of another model than configured
        raise MessageError("decode_error", f"velodyne-decoder: {err}") from None
    return np.ascontiguousarray(cloud[:, :4], dtype=np.float32), problems


# --------------------------------------------------------------------------- audio


# Format -> (numpy dtype of one sample, full scale, zero level). S24LE is widened apart.
_PCM: dict[SampleFormat, tuple[str, float, float]] = {
    SampleFormat.S8: ("i1", 2.0**7, 0.0),
    SampleFormat.U8: ("u1", 2.0**7, 2.0**7),
    SampleFormat.S16LE: ("<i2", 2.0**15, 0.0),
    SampleFormat.S16BE: (">i2", 2.0**15, 0.0),
    SampleFormat.S24LE: ("<i4", 2.0**23, 0.0),
    SampleFormat.S32LE: ("<i4", 2.0**31, 0.0),
    SampleFormat.S32BE: (">i4", 2.0**31, 0.0),
    SampleFormat.F32LE: ("<f4", 1.0, 0.0),
    SampleFormat.F32BE: (">f4", 1.0, 0.0),
    SampleFormat.F64LE: ("<f8", 1.0, 0.0),
}


@dataclass(frozen=True)
class AudioFormat:
    sample_rate: int
    channels: int
    sample_format: SampleFormat

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample of every channel."""
        width = (
            3 if self.sample_format is SampleFormat.S24LE else np.dtype(_PCM[self.sample_format][0]).itemsize
        )
        return self.channels * width


def sample_format(name: str) -> SampleFormat:
    """The SampleFormat named `name` (any case); ValueError listing the supported ones."""
    try:
        return SampleFormat(name.upper())
    except ValueError:
        raise InputError(
            f"unsupported audio sample format {name!r} (supported: {', '.join(SampleFormat)})"
        ) from None


def audio_format(info: Any) -> AudioFormat:
    """The format an audio_common_msgs/AudioInfo announces; ValueError when it is not raw PCM fusion reads."""
    coding = str(info.coding_format).lower()
    if coding not in ("", "wave", "wav", "pcm", "raw"):
        raise InputError(f"audio coding {info.coding_format!r} is not supported (raw PCM / wave only)")
    if info.channels < 1 or info.sample_rate < 1:
        raise InputError(f"AudioInfo announces {info.channels} channels at {info.sample_rate} Hz")
    return AudioFormat(int(info.sample_rate), int(info.channels), sample_format(str(info.sample_format)))


def audio_pcm(data: np.ndarray, fmt: AudioFormat) -> np.ndarray:
    """AudioData bytes as mono float32 in [-1, 1] (channels averaged)."""
    raw = np.asarray(data, dtype=np.uint8)
    if len(raw) % fmt.frame_bytes:
        raise MessageError(
            "bad_message",
            f"{len(raw)} audio bytes are not whole {fmt.channels}-channel {fmt.sample_format} samples",
        )
    dtype, scale, zero = _PCM[fmt.sample_format]
    if fmt.sample_format is SampleFormat.S24LE:  # widen to int32, the sign from the top byte
        b = raw.reshape(-1, 3).astype(np.int32)
        values = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8
    else:
        values = raw.view(dtype)
    samples = ((values.astype(np.float64) - zero) / scale).reshape(-1, fmt.channels)
    return np.clip(samples.mean(axis=1), -1.0, 1.0).astype(np.float32)


def audio_messages(types: Any, pcm: np.ndarray, sample_rate: float, *, header: Any) -> tuple[Any, Any]:
    """(AudioDataStamped of F32LE mono `pcm`, the AudioInfo that describes it)."""
    data = types[AUDIO_DATA](data=np.ascontiguousarray(pcm, dtype="<f4").view(np.uint8).reshape(-1))
    info = types[AUDIO_INFO](
        channels=1,
        sample_rate=round(sample_rate),
        sample_format="F32LE",
        bitrate=round(sample_rate) * 32,
        coding_format="wave",
    )
    return types[AUDIO_DATA_STAMPED](header=header, audio=data), info
