"""`fusion monitor prometheus-config`: the shipped Prometheus config for a Ray started anywhere.

Ray's head lists every node's metrics agent in `<ray temp dir>/prom_metrics_service_discovery.json`.
The shipped deploy/prometheus/prometheus.yml reads it from Ray's default temp dir (/tmp/ray); a
head started with `--temp-dir` (or in a container with its own /tmp) needs that path, and the
alert rules need an absolute path once the file is written elsewhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from fusion.errors import MissingFileError

DISCOVERY_FILE = "prom_metrics_service_discovery.json"
_PACKAGE = Path(__file__).resolve().parent
# A wheel carries deploy/prometheus/ as fusion_cli/_prometheus; a checkout has it at the root.
_SHIPPED_DIRS = (_PACKAGE / "_prometheus", _PACKAGE.parent / "deploy" / "prometheus")


def shipped_prometheus_dir() -> Path:
    for d in _SHIPPED_DIRS:
        if (d / "prometheus.yml").is_file():
            return d
    raise MissingFileError(f"no prometheus.yml in any of {[str(d) for d in _SHIPPED_DIRS]}")


def prometheus_config(
    ray_temp_dir: Path, *, rules: Path | None = None, scrape_interval: str | None = None
) -> dict[str, Any]:
    """The shipped scrape config, reading `ray_temp_dir`'s discovery file and the rules at `rules`
    (default: the shipped alerts.yml), both as absolute paths."""
    shipped = shipped_prometheus_dir()
    config = yaml.safe_load((shipped / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "ray")
    job["file_sd_configs"] = [{"files": [str(Path(ray_temp_dir).resolve() / DISCOVERY_FILE)]}]
    config["rule_files"] = [str((rules or shipped / "alerts.yml").resolve())]
    if scrape_interval is not None:
        config["global"] = {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval}
    return config


def cmd_prometheus_config(args: argparse.Namespace) -> int:
    if not Path(args.ray_temp_dir).is_dir():
        raise MissingFileError(
            f"--ray-temp-dir {args.ray_temp_dir}: no such directory (is Ray started there?)"
        )
    text = yaml.safe_dump(prometheus_config(Path(args.ray_temp_dir), scrape_interval=args.scrape_interval))
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}: prometheus --config.file={args.out}", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    monitor = sub.add_parser("monitor", help="monitoring helpers (Prometheus)")
    msub = monitor.add_subparsers(dest="monitor_command", required=True)
    cfg = msub.add_parser(
        "prometheus-config",
        help="write deploy/prometheus/prometheus.yml for a Ray head's temp dir",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cfg.add_argument(
        "--ray-temp-dir", default="/tmp/ray", help="the head's `ray start --temp-dir` (default /tmp/ray)"
    )
    cfg.add_argument("--scrape-interval", default=None, help="e.g. 5s (default: the shipped 15s)")
    cfg.add_argument("--out", default="-", help="file to write (default: standard output)")
    cfg.set_defaults(func=cmd_prometheus_config)
