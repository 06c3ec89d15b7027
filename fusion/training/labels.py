"""Labels on a recording: a CSV of time segments, each with a class and optionally a position.

The file (conventionally `labels.csv` in the recording directory)::

    start,end,label,x,y,z
    12.0,16.0,nothing,,,
    16.0,16.05,car,14.2,-1.3,-0.95

`start` and `end` are seconds on the recording's clock (a frame's `timestamp`), a segment covers
[start, end), and segments are sorted and do not overlap; gaps between them are unlabelled time.
`x, y, z` (metres, rig frame: what the model's position head predicts as `target_position`) are
optional: the three columns may be left out of the header, and on a row they are all empty (no
position, as for 'nothing') or all numbers. Every problem is a `LabelError` naming `file:line`.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fusion.errors import InputError, LabelError

LABELS_FILE = "labels.csv"
_HEADER = ["start", "end", "label"]
_POSITION = ["x", "y", "z"]


@dataclass(frozen=True)
class LabelSegment:
    """One labelled time span [start, end)."""

    start: float
    end: float
    label: str
    position: tuple[float, float, float] | None = None  # metres, rig frame


class Labels:
    """Sorted, non-overlapping segments; `at(t)` finds the one covering t."""

    def __init__(self, segments: Sequence[LabelSegment], *, source: str = "labels") -> None:
        for prev, seg in itertools.pairwise(segments):
            if seg.start < prev.end:
                raise LabelError(f"{source}: segment {seg} starts before the previous one ends ({prev.end})")
        self.segments = list(segments)
        self.source = source
        self._starts = [s.start for s in self.segments]

    def __len__(self) -> int:
        return len(self.segments)

    def at(self, t: float) -> LabelSegment | None:
        """The segment with start <= t < end; None where t is unlabelled."""
        i = bisect.bisect_right(self._starts, t) - 1
        if i < 0 or t >= self.segments[i].end:
            return None
        return self.segments[i]

    @property
    def names(self) -> set[str]:
        return {s.label for s in self.segments}


def read_labels(path: str | Path, *, classes: Collection[str] | None = None) -> Labels:
    """Read and check a labels CSV; `classes`: the labels allowed (None: any)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LabelError(f"{path}: labels file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise LabelError(f"{path}: cannot read ({err})") from None
    rows = csv.reader(text.splitlines())
    header = [h.strip() for h in next(rows, [])]
    if header not in (_HEADER, _HEADER + _POSITION):
        raise LabelError(
            f"{path}:1: header must be 'start,end,label' or 'start,end,label,x,y,z', got {','.join(header)!r}"
        )
    segments: list[LabelSegment] = []
    previous_line = 0
    for line, row in enumerate(rows, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        seg = _segment(row, len(header), where=f"{path}:{line}", classes=classes)
        if segments and seg.start < segments[-1].start:
            raise LabelError(
                f"{path}:{line}: starts at {seg.start}, before line {previous_line} ({segments[-1].start}): "
                "segments must be sorted by start"
            )
        if segments and seg.start < segments[-1].end:
            raise LabelError(
                f"{path}:{line}: [{seg.start}, {seg.end}) overlaps line {previous_line} "
                f"[{segments[-1].start}, {segments[-1].end})"
            )
        segments.append(seg)
        previous_line = line
    return Labels(segments, source=str(path))


def _segment(row: list[str], width: int, *, where: str, classes: Collection[str] | None) -> LabelSegment:
    if len(row) != width:
        raise LabelError(f"{where}: {len(row)} columns, the header has {width}")
    start, end = _number(row[0], "start", where), _number(row[1], "end", where)
    if not end > start:
        raise LabelError(f"{where}: end ({end}) must be after start ({start})")
    label = row[2].strip()
    if not label:
        raise LabelError(f"{where}: empty label")
    if classes is not None and label not in classes:
        raise LabelError(f"{where}: unknown label {label!r} (known: {', '.join(classes)})")
    position = None
    cells = [c.strip() for c in row[3:]]
    if any(cells):
        if not all(cells):
            raise LabelError(f"{where}: x, y, z must be all given or all empty")
        x, y, z = (_number(c, n, where) for c, n in zip(cells, _POSITION, strict=True))
        position = (x, y, z)
    return LabelSegment(start=start, end=end, label=label, position=position)


def _number(cell: str, name: str, where: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise LabelError(f"{where}: {name} {cell.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise LabelError(f"{where}: {name} is {value}; a finite number is needed")
    return value


def write_labels(path: str | Path, segments: Iterable[LabelSegment]) -> Path:
    """Write segments as a labels CSV with x, y, z columns (floats written to round-trip exactly)."""
    path = Path(path)
    with path.open("w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(_HEADER + _POSITION)
        for s in segments:
            pos = [repr(v) for v in s.position] if s.position is not None else ["", "", ""]
            out.writerow([repr(s.start), repr(s.end), s.label, *pos])
    return path


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
