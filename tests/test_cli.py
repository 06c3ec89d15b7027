"""The `fusion` command as a user runs it: a real subprocess of the installed entry point."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def fusion(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fusion_cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("args", [[], ["model"], ["model", "info"], ["model", "smoke"]])
def test_every_command_has_help(args):
    res = fusion(*args, "--help")
    assert res.returncode == 0, res.stderr
    assert "usage: fusion" in res.stdout


def test_model_info_reports_paper_parameters_and_flops():
    res = fusion("model", "info", "--config", "configs/model/paper-imagenet.yaml")
    assert res.returncode == 0, res.stderr
    assert "parameters: 44912254 (44.9M)" in res.stdout.splitlines()
    flops = next(line for line in res.stdout.splitlines() if line.startswith("flops_per_sample:"))
    assert abs(int(flops.split()[1]) / 707.2e9 - 1) < 0.02
    assert "cross_attend[1]: 1 head(s), qk 261, v 261" in res.stdout
    assert "used by iteration(s) 2-8" in res.stdout


def test_model_info_input_override_changes_flops():
    small = fusion("model", "info", "--config", "configs/model/sensor-small.yaml")
    big = fusion("model", "info", "--config", "configs/model/sensor-small.yaml", "--input", "lidar=8192")
    assert small.returncode == big.returncode == 0
    assert "lidar=8192" not in big.stdout and "lidar      points      8192" in big.stdout

    def flops(out: str) -> int:
        return int(next(x for x in out.splitlines() if x.startswith("flops_per_sample:")).split()[1])

    assert flops(big.stdout) > flops(small.stdout)


def test_model_smoke_runs_and_survives_missing_modalities():
    res = fusion(
        "model", "smoke", "--config", "configs/model/sensor-small.yaml", "--batch", "2", "--repeats", "2"
    )
    assert res.returncode == 0, res.stderr
    assert "sample 0 top classes:" in res.stdout
    for m in ("camera", "lidar", "microphone"):
        assert f"without {m}: runs" in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["model", "info", "--config", "configs/model/missing.yaml"],
            "config file not found: configs/model/missing.yaml",
        ),
        (
            ["model", "info", "--config", "configs/model/sensor-small.yaml", "--input", "radar=4"],
            "unknown modality 'radar'",
        ),
        (
            ["model", "info", "--config", "configs/model/paper-imagenet.yaml", "--input", "lidar=4"],
            "--input lidar: modality not in this model",
        ),
        (
            ["model", "info", "--config", "configs/model/sensor-small.yaml", "--input", "camera=0x4"],
            "bad --input",
        ),
    ],
)
def test_bad_arguments_fail_with_a_message_not_a_traceback(args, message):
    res = fusion(*args)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def _two_rigs():
    from pipelines.config import load_pipeline_config

    config = load_pipeline_config(ROOT / "configs" / "pipeline" / "sim-local.yaml")
    first = config.rigs[0]
    second = first.model_copy(update={"id": "back", "replicas": 2})
    return config.model_copy(update={"rigs": [first, second]})


def test_rig_is_picked_by_config_id_or_by_replica_name_and_a_wrong_one_lists_the_rigs():
    from fusion.errors import ConfigError
    from fusion_cli.common import pick_rig

    config = _two_rigs()
    first = config.rigs[0].id
    assert pick_rig(config, None, path="p.yaml") == (first, config.rigs[0])
    assert pick_rig(config, "back", path="p.yaml") == ("back", config.rigs[1])
    assert pick_rig(config, "back-1", path="p.yaml", replicas=True) == ("back-1", config.rigs[1])
    with pytest.raises(ConfigError, match=rf"--rig 'back-1': not in p.yaml \(rigs: {first}, back\)$"):
        pick_rig(config, "back-1", path="p.yaml")
    with pytest.raises(ConfigError, match=rf"\(rigs: {first}, back-0, back-1\)$"):
        pick_rig(config, "back", path="p.yaml", replicas=True)


def test_first_signal_stops_cleanly_and_a_second_interrupts_at_once(capsys):
    import signal

    from fusion_cli.common import stop_handler

    stops: list[str] = []
    handle = stop_handler(lambda: stops.append("stop"), who="fusion", doing="stopping, flushing outputs")
    handle(signal.SIGTERM, None)
    assert stops == ["stop"]
    assert capsys.readouterr().err == "\nfusion: SIGTERM: stopping, flushing outputs\n"
    with pytest.raises(KeyboardInterrupt):
        handle(signal.SIGINT, None)
    assert stops == ["stop"]


def _main_with(monkeypatch, error: Exception) -> int:
    """`fusion.main` with a command that raises `error`."""
    from fusion_cli import main as cli

    def fails(args):
        raise error

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv: type("Args", (), {"func": staticmethod(fails)})())
    return cli.main([])


def test_a_user_error_is_one_line_and_exit_2(monkeypatch, capsys):
    from fusion.errors import ConfigError, MissingFileError, StartError

    for error in (
        ConfigError("x.yaml: rigs[0].sync.slop: bad"),
        MissingFileError("a.bag: no such file"),
        StartError("port 9 taken"),
    ):
        assert _main_with(monkeypatch, error) == 2
        err = capsys.readouterr().err
        assert err == f"fusion: error: {error}\n"


def test_a_bug_keeps_its_traceback(monkeypatch):
    # A ValueError that is not a FusionError is a programming error, not the user's to fix.
    with pytest.raises(ValueError, match="internal"):
        _main_with(monkeypatch, ValueError("internal invariant broken"))
    with pytest.raises(KeyError):
        _main_with(monkeypatch, KeyError("x"))


def test_every_user_error_class_is_a_fusion_error():
    import fusion.errors as errors
    from fusion.flow.recovery import TooManyRestarts
    from fusion.sensors.ros.messages import MessageError

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert len(classes) >= 10
    assert all(issubclass(c, errors.FusionError) for c in [*classes, TooManyRestarts, MessageError])
