"""The run summary's warnings, without Ray."""

from __future__ import annotations

from pipelines.run_state import starved_modalities


def test_a_modality_missing_from_most_samples_is_named_with_why():
    # Measured: 4 rigs on 2 cores lost the camera from every sample, and nothing said so.
    fusers = {
        "sim-1": {
            "samples": 100,
            "incomplete": {"camera": 100, "microphone": 3},
            "sync_dropped": {"camera:late": 290, "lidar:evicted_unused": 2},
            "input_errors": {},
        },
        "sim-0": {"samples": 100, "incomplete": {"camera": 50}, "sync_dropped": {}, "input_errors": {}},
        "sim-2": {
            "samples": 10,
            "incomplete": {"lidar": 9},
            "sync_dropped": {},
            "input_errors": {"lidar:preprocess": 9},
        },
        "idle": {"samples": 0, "incomplete": {}, "sync_dropped": {}, "input_errors": {}},
    }
    assert starved_modalities(fusers) == [
        "rig sim-1: camera missing from 100 of 100 samples (camera:late 290)",
        "rig sim-2: lidar missing from 9 of 10 samples (lidar:preprocess 9)",
    ]  # half is not "most": sim-0 passes
