"""`InstrumentedSink`: the driver's last stage, timing each prediction on its way to the sink."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from fusion.sample import Prediction
from fusion.sinks.base import Sink
from pipelines.metrics import recorders  # by module: tests capture what it records
from pipelines.metrics.names import (
    DETECTIONS,
    END_TO_END_LATENCY,
    OBJECTS_PER_PREDICTION,
    PREDICTIONS,
    STAGE_LATENCY,
)

_STAGES = (("capture_to_fused", "fused"), ("fused_to_inferred", "inferred"))


class InstrumentedSink(Sink):
    """Wraps the output sink: each prediction written is counted, its latencies observed, and
    its objects counted (per prediction, and per class).

    Sits behind the OrderedSink, so every prediction is seen once, when it is really written.
    """

    def __init__(self, sink: Sink, *, clock: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self.clock = clock

    def write(self, prediction: Prediction) -> None:
        self.sink.write(prediction)
        now = self.clock()
        times = prediction.stage_times
        captured = max((t for k, t in times.items() if k.startswith("capture.")), default=None)
        if captured is not None:
            recorders.observe(END_TO_END_LATENCY, now - captured)
        previous = captured
        for stage, key in _STAGES:
            if key in times and previous is not None:
                recorders.observe(STAGE_LATENCY, times[key] - previous, stage=stage)
            previous = times.get(key)
        if previous is not None:
            recorders.observe(STAGE_LATENCY, now - previous, stage="inferred_to_written")
        recorders.inc(PREDICTIONS)
        recorders.observe(OBJECTS_PER_PREDICTION, len(prediction.objects))
        for name, n in Counter(box.class_name for box in prediction.objects).items():
            recorders.inc(DETECTIONS, n, **{"class": name})

    def close(self) -> None:
        self.sink.close()
