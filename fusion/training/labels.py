"""Labels on a recording: a CSV with one row per object per time span.

The file (conventionally `labels.csv` in the recording directory) names its columns in a header
row, in any order::

    start,end,class,x,y,z,l,w,h,yaw,vx,vy,track_id
    12.0,16.0,nothing,,,,,,,,,,
    16.0,16.05,car,14.2,-1.3,-0.95,4.5,1.9,1.5,0.12,-3.0,0.1,7
    16.0,16.05,pedestrian,8.0,3.1,-0.8,0.6,0.6,1.75,,,,9

`start`, `end`, `class` and the centre `x, y, z` are required columns; the size `l, w, h`, `yaw`,
the velocity `vx, vy` and `track_id` are optional (a group's columns come together). A row is
one object over [start, end) (seconds on the recording's clock, a frame's `timestamp`), in the
rig's base frame (metres, radians, m/s: `fusion.detection.Box3D`). Rows may overlap in time (the
objects of one instant), but not two rows of the same `track_id`: that would be one object in two
places, so it is refused rather than merged. A `nothing` row (every other cell empty) marks time
known to hold no object, and overlaps no other row. Time no row covers is unlabelled.

A row's object is a `Box3D` when it has a size: an unknown yaw is 0 and an unknown velocity
(0, 0), but no size is made up, so an instant with an object of unknown size has no object list.

Today's one-label files still read (header `start,end,label` or `start,end,label,x,y,z`): one
object per span, sorted, spans not overlapping; the position may be empty (as for `nothing`).
Every problem is a `LabelError` naming `file:line: field:`.
"""

from __future__ import annotations

import bisect
import csv
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fusion.detection.boxes import Box3D
from fusion.errors import InputError, LabelError

LABELS_FILE = "labels.csv"
NOTHING = "nothing"  # the class of a row that marks time known to hold no object
_LEGACY = ["start", "end", "label"]
_POSITION = ["x", "y", "z"]
_SIZE = ["l", "w", "h"]
_VELOCITY = ["vx", "vy"]
# The object form's columns: required, then the optional groups (all of a group or none of it).
_REQUIRED = ["start", "end", "class", *_POSITION]
_GROUPS = [_SIZE, ["yaw"], _VELOCITY, ["track_id"]]
_COLUMNS = _REQUIRED + [c for g in _GROUPS for c in g]


@dataclass(frozen=True)
class LabelSegment:
    """One row: one object (or `nothing`) over the time span [start, end).

    Attributes:
        label: the class name.
        position: the box centre (x, y, z) m, rig frame; None for `nothing` (and, in a
            one-label file, for a span labelled without a position).
        size: (l, w, h) m, or None when not given; yaw rad and velocity (vx, vy) m/s likewise.
        track_id: the object's identity across spans, when given.
    """

    start: float
    end: float
    label: str
    position: tuple[float, float, float] | None = None
    size: tuple[float, float, float] | None = None
    yaw: float | None = None
    velocity: tuple[float, float] | None = None
    track_id: str | None = None

    def box(self) -> Box3D | None:
        """The object as ground truth; None for `nothing` and for an object of unknown size."""
        if self.position is None or self.size is None:
            return None
        return Box3D(
            class_name=self.label,
            center=self.position,
            size=self.size,
            yaw=self.yaw or 0.0,
            velocity=self.velocity or (0.0, 0.0),
            track_id=self.track_id,
        )


class Labels:
    """The rows of a labels file, sorted by start; `at(t)` finds those covering t."""

    def __init__(self, segments: Sequence[LabelSegment], *, source: str = "labels") -> None:
        self.segments = sorted(segments, key=lambda s: s.start)
        clash = _clash(self.segments)
        if clash is not None:
            a, b = (self.segments[i] for i in clash)
            raise LabelError(f"{source}: {b} overlaps {a}")
        self.source = source
        self._starts = [s.start for s in self.segments]
        self._reach = [0.0] * len(self.segments)  # the latest end of segments[: i + 1]
        for i, s in enumerate(self.segments):
            self._reach[i] = max(s.end, self._reach[i - 1] if i else -math.inf)

    def __len__(self) -> int:
        return len(self.segments)

    def at(self, t: float) -> list[LabelSegment]:
        """Every row with start <= t < end, in start order; [] where t is unlabelled."""
        out = []
        i = bisect.bisect_right(self._starts, t) - 1
        while i >= 0 and self._reach[i] > t:
            if self.segments[i].end > t:
                out.append(self.segments[i])
            i -= 1
        return out[::-1]

    def objects(self, t: float) -> list[Box3D] | None:
        """The objects at t: [] for `nothing`; None where t is unlabelled or an object at t has
        no box (no position or no size)."""
        rows = self.at(t)
        boxes = [s.box() for s in rows if s.label != NOTHING]
        if not rows or any(b is None for b in boxes):
            return None
        return [b for b in boxes if b is not None]

    @property
    def names(self) -> set[str]:
        return {s.label for s in self.segments}


def _clash(segments: Sequence[LabelSegment]) -> tuple[int, int] | None:
    """Indices (earlier, later) of the first two rows, sorted by start, that may not overlap:
    two of one track, or `nothing` and anything; None when there are none."""
    latest = -1  # the row reaching furthest so far
    nothing = -1  # the `nothing` row reaching furthest so far
    tracks: dict[str, int] = {}
    for i, s in enumerate(segments):
        if s.label == NOTHING and latest >= 0 and segments[latest].end > s.start:
            return latest, i
        if nothing >= 0 and segments[nothing].end > s.start:
            return nothing, i
        if s.track_id is not None:
            j = tracks.get(s.track_id)
            if j is not None and segments[j].end > s.start:
                return j, i
            tracks[s.track_id] = i
        if s.label == NOTHING and (nothing < 0 or s.end > segments[nothing].end):
            nothing = i
        if latest < 0 or s.end > segments[latest].end:
            latest = i
    return None


def read_labels(path: str | Path, *, classes: Collection[str] | None = None) -> Labels:
    """Read and check a labels CSV; `classes`: the class names allowed (None: any)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LabelError(f"{path}: labels file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise LabelError(f"{path}: cannot read ({err})") from None
    rows = csv.reader(text.splitlines())
    header = [h.strip() for h in next(rows, [])]
    legacy = header in (_LEGACY, _LEGACY + _POSITION)
    if not legacy:
        _check_header(header, where=f"{path}:1")
    segments: list[LabelSegment] = []
    lines: list[int] = []
    for line, row in enumerate(rows, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        where = f"{path}:{line}"
        if len(row) != len(header):
            raise LabelError(f"{where}: {len(row)} columns, the header has {len(header)}")
        cells = {name: cell.strip() for name, cell in zip(header, row, strict=True)}
        seg = _legacy_row(cells, where) if legacy else _row(cells, where)
        if classes is not None and seg.label not in classes:
            field = "label" if legacy else "class"
            raise LabelError(f"{where}: {field}: unknown class {seg.label!r} (known: {', '.join(classes)})")
        if legacy and segments:
            _check_sorted(segments[-1], seg, where=where, previous_line=lines[-1])
        segments.append(seg)
        lines.append(line)
    order = sorted(range(len(segments)), key=lambda i: segments[i].start)
    clash = _clash([segments[i] for i in order])
    if clash is not None:
        a, b = sorted(order[i] for i in clash)
        what = "its track" if segments[a].track_id is not None and segments[a].label != NOTHING else "it"
        raise LabelError(
            f"{path}:{lines[b]}: [{segments[b].start}, {segments[b].end}) overlaps line {lines[a]} "
            f"[{segments[a].start}, {segments[a].end}) of {what}"
        )
    return Labels(segments, source=str(path))


def _check_header(header: list[str], *, where: str) -> None:
    legacy = "'start,end,label' or 'start,end,label,x,y,z'"
    unknown = [h for h in header if h not in _COLUMNS]
    if unknown or len(set(header)) != len(header):
        bad = unknown[0] if unknown else next(h for h in header if header.count(h) > 1)
        raise LabelError(
            f"{where}: header: {'unknown' if unknown else 'repeated'} column {bad!r} (columns: "
            f"{', '.join(_COLUMNS)}; or today's {legacy})"
        )
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise LabelError(f"{where}: header: no column {missing[0]!r} (required: {', '.join(_REQUIRED)})")
    for group in _GROUPS:
        given = [c for c in group if c in header]
        if 0 < len(given) < len(group):
            raise LabelError(
                f"{where}: header: columns {', '.join(group)} come together, got {', '.join(given)}"
            )


def _row(cells: dict[str, str], where: str) -> LabelSegment:
    start, end = _span(cells, where)
    label = cells["class"]
    if not label:
        raise LabelError(f"{where}: class: empty")
    if label == NOTHING:
        given = [c for c in _COLUMNS[3:] if cells.get(c)]
        if given:
            raise LabelError(f"{where}: {given[0]}: a {NOTHING!r} row has no object, so no {given[0]}")
        return LabelSegment(start=start, end=end, label=label)
    size = _group(cells, _SIZE, where, required=False)
    if size is not None and min(size) <= 0:
        axis = _SIZE[size.index(min(size))]
        raise LabelError(f"{where}: {axis}: {min(size)} m; a size is > 0")
    yaw = _group(cells, ["yaw"], where, required=False)
    return LabelSegment(
        start=start,
        end=end,
        label=label,
        position=_xyz(_group(cells, _POSITION, where, required=True)),
        size=_xyz(size),
        yaw=None if yaw is None else yaw[0],
        velocity=_xy(_group(cells, _VELOCITY, where, required=False)),
        track_id=cells.get("track_id") or None,
    )


def _legacy_row(cells: dict[str, str], where: str) -> LabelSegment:
    start, end = _span(cells, where)
    label = cells["label"]
    if not label:
        raise LabelError(f"{where}: label: empty")
    position = _group(cells, _POSITION, where, required=False) if "x" in cells else None
    return LabelSegment(start=start, end=end, label=label, position=_xyz(position))


def _xyz(v: tuple[float, ...] | None) -> tuple[float, float, float] | None:
    return None if v is None else (v[0], v[1], v[2])


def _xy(v: tuple[float, ...] | None) -> tuple[float, float] | None:
    return None if v is None else (v[0], v[1])


def _span(cells: dict[str, str], where: str) -> tuple[float, float]:
    start, end = _number(cells["start"], "start", where), _number(cells["end"], "end", where)
    if not end > start:
        raise LabelError(f"{where}: end: {end} is not after start ({start})")
    return start, end


def _group(
    cells: dict[str, str], names: list[str], where: str, *, required: bool
) -> tuple[float, ...] | None:
    """The numbers of a group of columns (all given, or all empty and then None)."""
    given = [cells.get(n, "") for n in names]
    if not any(given) and not required:
        return None
    missing = [n for n, c in zip(names, given, strict=True) if not c]
    if missing:
        need = "an object needs its centre" if required else f"give all of {', '.join(names)} or none"
        raise LabelError(f"{where}: {missing[0]}: empty; {need}")
    return tuple(_number(c, n, where) for c, n in zip(given, names, strict=True))


def _number(cell: str, name: str, where: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise LabelError(f"{where}: {name}: not a number ({cell!r})") from None
    if not math.isfinite(value):
        raise LabelError(f"{where}: {name}: {value} is not a finite number")
    return value


def _check_sorted(previous: LabelSegment, seg: LabelSegment, *, where: str, previous_line: int) -> None:
    """A one-label file's spans are sorted and do not overlap (one label at a time)."""
    if seg.start < previous.start:
        raise LabelError(
            f"{where}: start: {seg.start} is before line {previous_line} ({previous.start}): "
            "the spans of a one-label file are sorted by start"
        )
    if seg.start < previous.end:
        raise LabelError(
            f"{where}: start: [{seg.start}, {seg.end}) overlaps line {previous_line} "
            f"[{previous.start}, {previous.end}); a one-label file has one label at a time"
        )


def write_labels(path: str | Path, segments: Iterable[LabelSegment]) -> Path:
    """Write rows in the object form with every column (floats written to round-trip exactly)."""
    path = Path(path)
    with path.open("w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(_COLUMNS)
        for s in segments:
            yaw = None if s.yaw is None else (s.yaw,)
            cells = [s.position, s.size, yaw, s.velocity]
            numbers = [_cells(v, n) for v, n in zip(cells, (3, 3, 1, 2), strict=True)]
            row = [repr(s.start), repr(s.end), s.label, *(c for group in numbers for c in group)]
            out.writerow([*row, s.track_id or ""])
    return path


def _cells(values: Sequence[float] | None, n: int) -> list[str]:
    return [""] * n if values is None else [repr(v) for v in values]


class ClassMap:
    """Maps the labels of a file (or a model's class names) onto a class list.

    `spec`: `source=target` pairs, comma-separated (`pedestrian=person,car=vehicle`); a label
    not named maps to itself. Targets must be in `classes`.
    """

    def __init__(self, classes: Sequence[str], spec: str = "") -> None:
        if len(set(classes)) != len(classes) or not classes:
            raise InputError(f"classes must be distinct names, got {list(classes)}")
        self.classes = list(classes)
        self.mapping: dict[str, str] = {}
        for pair in filter(None, (p.strip() for p in spec.split(","))):
            source, sep, target = (s.strip() for s in pair.partition("="))
            if not sep or not source or not target:
                raise InputError(f"class map: {pair!r} is not source=target")
            if target not in self.classes:
                raise InputError(f"class map: {pair!r} maps to {target!r}, not one of {', '.join(classes)}")
            self.mapping[source] = target

    def known(self) -> set[str]:
        """The labels that map onto a class."""
        return set(self.classes) | set(self.mapping)

    def index(self, label: str) -> int:
        """The class index of a label; KeyError when it maps to none."""
        target = self.mapping.get(label, label)
        if target not in self.classes:
            raise KeyError(label)
        return self.classes.index(target)
