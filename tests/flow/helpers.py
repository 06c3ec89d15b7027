"""Small samples and predictions for the flow tests: the flow never looks inside them."""

from fusion.sample import FusedSample, Prediction


def sample(seq: int, rig: str = "r") -> FusedSample:
    return FusedSample(seq=seq, timestamp=seq / 10, segments={}, rig=rig)


def prediction(seq: int, rig: str = "r") -> Prediction:
    return Prediction(
        rig=rig,
        seq=seq,
        timestamp=seq / 10,
        label="a",
        probs=[1.0],
        position=None,
        modalities=[],
        latency_s=0.01,
        model_version="m@0",
    )
