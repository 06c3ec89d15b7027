"""One reader for ROS 1 bags, ROS 2 bag folders (sqlite3 or mcap storage) and standalone MCAP files.

rosbags reads all three without a ROS install, but through different classes (its `AnyReader`
takes no standalone .mcap, and refuses a whole bag when one topic lacks a definition). `BagFile`
puts them behind one small interface: its topics, their raw messages lazily in log order, and
a deserializer built only from the definitions of the topics actually read, so a broken or
unknown type elsewhere in the bag does not stop a topic that is fine.

Every failure is a `BagError` whose message names the file (and the topic where there is one).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.rosbag1 import Reader as Reader1
from rosbags.rosbag2 import Reader as Reader2
from rosbags.rosbag2.storage_mcap import McapReader
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from fusion.errors import BagError
from fusion.sensors.ros.types import RosVersion, typestore

ROS2_METADATA = "metadata.yaml"


class BagKind(StrEnum):
    ROS1 = "ROS 1 bag"
    ROS2 = "ROS 2 bag"
    MCAP = "MCAP file"


def bag_kind(path: Path) -> BagKind | None:
    """What kind of bag `path` is by its name and layout; None when it is none of them."""
    if path.is_dir():
        return BagKind.ROS2 if (path / ROS2_METADATA).is_file() else None
    return {".bag": BagKind.ROS1, ".mcap": BagKind.MCAP}.get(path.suffix.lower())


@dataclass(frozen=True)
class Topic:
    """One topic of a bag: its type, message count and the reader connections that carry it."""

    name: str
    msgtype: str
    count: int
    connections: tuple[Connection, ...]


class BagFile:
    """A bag opened for reading; a context manager. Nothing is read before `messages()` iterates."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        kind = bag_kind(self.path)
        if not self.path.exists():
            raise BagError(f"{self.path}: no such file or directory")
        if kind is None:
            raise BagError(
                f"{self.path}: not a ROS 1 .bag, a ROS 2 bag folder (metadata.yaml) or a .mcap file"
            )
        self.kind: BagKind = kind
        self.version = RosVersion.ROS1 if kind is BagKind.ROS1 else RosVersion.ROS2
        self._reader: Any = None  # Reader1 | Reader2 | McapReader
        self.topics: dict[str, Topic] = {}

    def open(self) -> BagFile:
        reader: Any
        match self.kind:
            case BagKind.ROS1:
                reader = Reader1(self.path)
            case BagKind.ROS2:
                reader = Reader2(self.path)
            case BagKind.MCAP:
                reader = McapReader(self.path)
        try:
            reader.open()
        # rosbags parses untrusted bytes and fails with whatever the damage triggers (its own
        # ReaderError, struct.error, sqlite3.DatabaseError, KeyError, even AssertionError): every
        # one of them means this file cannot be read, which is what the message says.
        except Exception as err:
            raise BagError(
                f"{self.path}: cannot read this {self.kind} (corrupt or truncated?): {_text(err)}"
            ) from None
        self._reader = reader
        by_topic: dict[str, list[Connection]] = {}
        for conn in reader.connections:
            by_topic.setdefault(conn.topic, []).append(conn)
        self.topics = {
            name: Topic(name, conns[0].msgtype, sum(c.msgcount for c in conns), tuple(conns))
            for name, conns in sorted(by_topic.items())
        }
        return self

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def __enter__(self) -> BagFile:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def topic(self, name: str, *, types: Collection[str] = ()) -> Topic:
        """The topic `name`, of one of `types` when given; BagError listing what the bag has."""
        topic = self.topics.get(name)
        if topic is None:
            present = ", ".join(f"{t.name} ({t.msgtype})" for t in self.topics.values()) or "none"
            raise BagError(f"{self.path}: no topic {name!r} (topics: {present})")
        if types and topic.msgtype not in types:
            raise BagError(
                f"{self.path}: topic {name} is {topic.msgtype}; expected {' or '.join(sorted(types))}"
            )
        return topic

    def messages(self, topics: Sequence[Topic]) -> Iterator[tuple[Topic, int, bytes]]:
        """(topic, log time in ns, serialized message) of `topics`, in log-time order, read lazily.

        A file damaged mid-way ends the iteration with a BagError naming the file and topics.
        """
        if self._reader is None:
            raise BagError(f"{self.path}: messages() before open()")
        owner = {c.id: t for t in topics for c in t.connections}
        connections = [c for t in topics for c in t.connections]
        count = 0
        try:
            for conn, log_ns, raw in self._reader.messages(connections=connections):
                count += 1
                yield owner[conn.id], log_ns, raw
        except Exception as err:  # damaged data: see open()
            names = ", ".join(t.name for t in topics)
            raise BagError(
                f"{self.path}: reading {names} failed after {count} messages (corrupt or truncated?): {_text(err)}"
            ) from None

    def deserializer(self, topics: Sequence[Topic]) -> Callable[[bytes, str], object]:
        """deserialize(raw, msgtype) for the types of `topics`, from the definitions in the bag
        (the built-in ones where it has none); BagError naming a topic whose type is unknown."""
        store = self._typestore(topics)
        if self.version is RosVersion.ROS1:
            return store.deserialize_ros1
        return store.deserialize_cdr

    def _typestore(self, topics: Sequence[Topic]) -> Typestore:
        store = get_typestore(Stores.EMPTY)
        fallback = typestore(self.version)
        for topic in topics:
            conn = topic.connections[0]
            try:
                store.register(_embedded_types(conn))
            except Exception as err:  # a definition rosbags cannot parse: see open()
                raise BagError(
                    f"{self.path}: topic {topic.name}: cannot use the embedded definition of "
                    f"{topic.msgtype}: {_text(err)}"
                ) from None
            if topic.msgtype not in store.fielddefs:
                if topic.msgtype not in fallback.fielddefs:
                    raise BagError(
                        f"{self.path}: topic {topic.name}: unknown message type {topic.msgtype} "
                        "(the bag has no definition for it)"
                    )
                store.register(
                    {k: v for k, v in fallback.fielddefs.items() if k not in store.fielddefs}  # type: ignore[misc]
                )
        return store


def _embedded_types(conn: Connection) -> dict[str, Any]:
    """The types a connection's embedded definition declares (none when it has none)."""
    msgdef = conn.msgdef
    if msgdef.format == MessageDefinitionFormat.MSG:
        return dict(get_types_from_msg(msgdef.data, conn.msgtype))
    if msgdef.format == MessageDefinitionFormat.IDL:
        # ROS 2 writes several IDL files into one definition, each after a separator line.
        sep = "=" * 80 + "\n"
        types: dict[str, Any] = {}
        parts = msgdef.data.split(sep)[1:] if msgdef.data.startswith(f"{sep}IDL: ") else [msgdef.data]
        for part in parts:
            types.update(get_types_from_idl(part.split("\n", 1)[1] if part.startswith("IDL: ") else part))
        return types
    return {}


def _text(err: BaseException) -> str:
    return str(err) or type(err).__name__
