"""The `rosbag` backend: one topic of a ROS 1 bag, a ROS 2 bag folder or an MCAP file as a sensor.

```yaml
source: {backend: rosbag, path: drive.bag, topic: /camera/image_raw}
```

- camera: sensor_msgs/Image (rgb8, bgr8, mono8, mono16, bayer, yuv422, ...) and
  sensor_msgs/CompressedImage (JPEG, PNG).
- lidar: sensor_msgs/PointCloud2 (any field layout) and velodyne_msgs/VelodyneScan
  (decoded by velodyne-decoder, one sweep per scan message).
- microphone: audio_common_msgs/AudioDataStamped or AudioData, raw PCM as its AudioInfo topic
  (or the config) describes it; one frame per message, mixed down to mono.

`Frame.timestamp` is the message's header.stamp (`time: header`, the default) or the time the
bag logged it (`time: receive`), in seconds; `wall_time` is the same instant (ROS time is Unix
time). Messages are read lazily, one at a time. Bad input never ends the stream: a message that
does not decode, has an unsupported encoding or goes back in time is skipped and counted; a bag
damaged mid-way ends the stream there, counted once ("corrupt_bag"). A missing topic, a type the
modality cannot read or an unreadable bag fails at `open()`, naming the file and topic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import velodyne_decoder as vd

from fusion.errors import BagError, InputError, SourceError
from fusion.sample import MODALITY_ORDER, Frame, Modality
from fusion.sensors.registry import FileReport, register_probe
from fusion.sensors.ros.bagfile import BagFile, Topic, bag_kind
from fusion.sensors.ros.config import ROSBAG, BagTime, RosbagConfig, RosbagLidarConfig, RosbagMicrophoneConfig
from fusion.sensors.ros.messages import (
    AudioFormat,
    MessageError,
    audio_format,
    audio_pcm,
    cloud_points,
    compressed_rgb,
    decode_scan,
    image_rgb,
)
from fusion.sensors.ros.types import (
    AUDIO_DATA_STAMPED,
    AUDIO_INFO,
    COMPRESSED_IMAGE,
    HEADERLESS,
    MODALITY_OF,
    VELODYNE_SCAN,
    seconds,
    stamp_ns,
)
from fusion.sensors.source import EndOfStream, Source
from fusion.sensors.sweeps import finite_sweep
from fusion.sensors.velodyne.packets import decoder_config

# One message as Frame fields (`data`, and `sample_rate` for audio): (type, message, stamp in
# seconds) -> fields; None when it was skipped (already counted); MessageError when it has none.
Decode = Callable[[str, Any, float], dict[str, Any] | None]


class RosbagSource(Source):
    """A finite source over one topic: never waits on a clock (pace with the pipeline's replay).

    Serves every modality: the topic's message types are the modality's (`MODALITY_OF`), and
    `_DECODERS` turns one message into frame fields, set up at `open()` for the topic.
    """

    backend = ROSBAG
    config: RosbagConfig

    def __init__(self, config: RosbagConfig, *, modality: Modality | None = None) -> None:
        super().__init__(config, modality=modality)
        self._bag: BagFile | None = None
        self._topic: Topic | None = None
        self._messages: Iterator[tuple[Topic, int, bytes]] | None = None
        self._deserialize: Any = None
        self._decode: Decode | None = None
        self._last_ns = -(2**63)
        self._index = 0

    def _where(self) -> str:
        return f"{self.config.path} topic {self.config.topic}"

    def open(self) -> None:
        try:
            bag = BagFile(self.config.path).open()
        except BagError as err:
            raise SourceError(f"{self.modality.value} {self.sensor_id!r}: {err}") from None
        try:
            types = frozenset(t for t, m in MODALITY_OF.items() if m is self.modality)
            topic = bag.topic(self.config.topic, types=types)
            if self.config.time is BagTime.HEADER and topic.msgtype in HEADERLESS:
                raise BagError(
                    f"{bag.path}: topic {topic.name} is {topic.msgtype}, which has no header.stamp: "
                    "set `time: receive`"
                )
            self._deserialize = bag.deserializer([topic])
            self._decode = _DECODERS[self.modality](self, bag, topic)
        except (BagError, ValueError) as err:
            bag.close()
            raise SourceError(f"{self.modality.value} {self.sensor_id!r}: {err}") from None
        self._bag, self._topic = bag, topic
        self._messages = bag.messages([topic])

    def read(self, timeout: float | None = None) -> Frame:
        """The next usable message as a Frame; EndOfStream after the last. Never waits."""
        if self._messages is None or self._topic is None:
            raise SourceError(f"{self.modality.value}/{self.sensor_id}: read() before open()")
        while True:
            try:
                topic, log_ns, raw = next(self._messages)
            except StopIteration:
                raise EndOfStream(f"{self._where()}: end of topic") from None
            except BagError as err:
                self.skip("corrupt_bag", str(err))
                self._messages = iter(())
                raise EndOfStream(f"{self._where()}: bag ends early") from None
            frame = self._frame(topic.msgtype, raw, log_ns)
            if frame is not None:
                return frame

    def _frame(self, msgtype: str, raw: bytes, log_ns: int) -> Frame | None:
        assert self._decode is not None, "read() before open()"
        index, self._index = self._index, self._index + 1
        try:
            msg = self._deserialize(raw, msgtype)
        except Exception as err:  # rosbags' deserializer on damaged bytes: any error, same meaning
            self.skip("bad_message", f"{self._where()}: message {index} does not deserialize: {err}")
            return None
        ns = log_ns if self.config.time is BagTime.RECEIVE else stamp_ns(msg.header.stamp)  # type: ignore[attr-defined]
        if ns < self._last_ns:
            self.skip(
                "time_backwards", f"{self._where()}: message {index} is stamped before the one before it"
            )
            return None
        stamp = seconds(ns)
        try:
            fields = self._decode(msgtype, msg, stamp)
        except MessageError as err:
            self.skip(err.reason, f"{self._where()}: message {index}: {err}")
            return None
        if fields is None:
            return None
        self._last_ns = ns
        self.stats.frames += 1
        return Frame(
            modality=self.modality,
            sensor_id=self.sensor_id,
            timestamp=stamp,
            wall_time=stamp,
            index=index,
            **fields,
        )

    def close(self) -> None:
        self._messages = None
        self._decode = None
        bag, self._bag = self._bag, None
        if bag is not None:
            bag.close()


def _camera(source: RosbagSource, bag: BagFile, topic: Topic) -> Decode:
    """sensor_msgs/Image and CompressedImage -> [H, W, 3] uint8 RGB."""
    return lambda msgtype, msg, stamp: {
        "data": compressed_rgb(msg) if msgtype == COMPRESSED_IMAGE else image_rgb(msg)
    }


def _lidar(source: RosbagSource, bag: BagFile, topic: Topic) -> Decode:
    """PointCloud2, or VelodyneScan decoded by velodyne-decoder -> [N, 4] float32 finite points."""
    config = source.config
    assert isinstance(config, RosbagLidarConfig)
    decoder = None
    if topic.msgtype == VELODYNE_SCAN:
        decoder = vd.ScanDecoder(decoder_config(config.model, config.calibration))

    def decode(msgtype: str, msg: Any, stamp: float) -> dict[str, Any] | None:
        if decoder is None:
            points = cloud_points(msg)
        else:
            points, problems = decode_scan(decoder, msg, stamp)
            for problem in problems:
                source.skip("bad_packet", f"{source._where()}: {problem}")
        finite = finite_sweep(source, points, source._where())
        return None if finite is None else {"data": finite}

    return decode


def _microphone(source: RosbagSource, bag: BagFile, topic: Topic) -> Decode:
    """AudioData(Stamped) -> mono float32 PCM, in the format of the config or the AudioInfo topic."""
    fmt = _audio_format(bag, topic, source.config)

    def decode(msgtype: str, msg: Any, stamp: float) -> dict[str, Any]:
        audio = msg.audio if msgtype == AUDIO_DATA_STAMPED else msg
        return {"data": audio_pcm(audio.data, fmt), "sample_rate": float(fmt.sample_rate)}

    return decode


_DECODERS: dict[Modality, Callable[[RosbagSource, BagFile, Topic], Decode]] = {
    Modality.CAMERA: _camera,
    Modality.LIDAR: _lidar,
    Modality.MICROPHONE: _microphone,
}


def _audio_format(bag: BagFile, topic: Topic, config: RosbagConfig) -> AudioFormat:
    """What the audio bytes hold: as the config says, or as the topic's AudioInfo announces."""
    assert isinstance(config, RosbagMicrophoneConfig)
    if config.sample_rate is not None:
        return AudioFormat(config.sample_rate, config.channels, config.sample_format)
    info = _info_topic(bag, topic, config.info_topic)
    for _, _, raw in bag.messages([info]):
        try:
            return audio_format(bag.deserializer([info])(raw, AUDIO_INFO))
        except ValueError as err:
            raise InputError(f"{bag.path}: {info.name}: {err}") from None
    raise InputError(f"{bag.path}: {info.name} holds no AudioInfo message")


def _info_topic(bag: BagFile, audio: Topic, name: str | None) -> Topic:
    """The AudioInfo topic that describes `audio`: named, beside it, or the bag's only one."""
    if name is not None:
        return bag.topic(name, types={AUDIO_INFO})
    infos = [t for t in bag.topics.values() if t.msgtype == AUDIO_INFO]
    beside = f"{audio.name.rsplit('/', 1)[0]}/audio_info"
    for topic in infos:
        if topic.name == beside:
            return topic
    if len(infos) == 1:
        return infos[0]
    found = ", ".join(t.name for t in infos) or "none"
    raise InputError(
        f"{bag.path}: which AudioInfo describes {audio.name}? (AudioInfo topics: {found}); "
        "set info_topic, or sample_rate (with channels and sample_format)"
    )


# --------------------------------------------------------------------------- fusion inspect


@register_probe(lambda path: bag_kind(path) is not None)
def probe_bag(path: Path) -> FileReport:
    """Every topic of a bag: type, message count, rate, and the modality it can feed.

    Counts come from the bag's index; the rate from the log times, read without deserializing.
    """
    with BagFile(path) as bag:
        topics = list(bag.topics.values())
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for topic, log_ns, _ in bag.messages(topics):
            first.setdefault(topic.name, log_ns)
            last[topic.name] = log_ns
    feeds = {t.name: MODALITY_OF.get(t.msgtype) for t in topics}
    modalities = [m for m in MODALITY_ORDER if m in feeds.values()]
    if not modalities:
        listed = ", ".join(f"{t.name} ({t.msgtype})" for t in topics) or "no topics"
        raise InputError(f"{path}: no topic of a type fusion reads ({listed})")
    details: dict[str, Any] = {"format": str(bag.kind)}
    for t in topics:
        span = seconds(last.get(t.name, 0) - first.get(t.name, 0))
        rate = (t.count - 1) / span if t.count > 1 and span > 0 else 0.0
        modality = feeds[t.name]
        details[t.name] = f"{t.msgtype}, {t.count} messages, {rate:.2f}/s, " + (
            f"feeds {modality.value}" if modality else "not a sensor fusion reads"
        )
    return FileReport(
        path=str(path),
        modality=modalities[0],
        backend="rosbag",
        frames=sum(t.count for t in topics),
        start=seconds(min(first.values(), default=0)),
        end=seconds(max(last.values(), default=0)),
        shapes=f"{len(topics)} topics; feeds {', '.join(m.value for m in modalities)}",
        details=details,
    )
