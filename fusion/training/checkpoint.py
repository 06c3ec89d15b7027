"""Checkpoints: safetensors weights plus the model config as JSON in the file's metadata.

Loading never unpickles anything: a pickle (or any file that is not safetensors) is refused
with a message that says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fusion.config import parse_config
from fusion.errors import CheckpointError
from fusion.model import ModelConfig, Perceiver, build_model

log = logging.getLogger(__name__)

_CONFIG_KEY = "fusion.model_config"
TRAIN_CONFIG_KEY = "fusion.train_config"  # set by `fusion train`: how the weights were trained
_PACKAGE = Path(__file__).resolve().parents[1]  # fusion/
# Shipped checkpoints, by preset name: a wheel carries checkpoints/ as fusion/_checkpoints, a
# source checkout has it at the repo root.
_SHIPPED_DIRS = (_PACKAGE / "_checkpoints", _PACKAGE.parent / "checkpoints")


def save_checkpoint(model: Perceiver, path: str | Path, *, extra: dict[str, str] | None = None) -> Path:
    """Write weights and config; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {_CONFIG_KEY: model.config.model_dump_json(), **(extra or {})}
    save_file(state, str(path), metadata=metadata)
    return path


def read_checkpoint(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, str]]:
    """(config, state dict, metadata) of a safetensors checkpoint, validated."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with path.open("rb") as f:
        head = f.read(9)
    # A safetensors file opens with an 8-byte header length, then the JSON header's '{'; the
    # length's first byte may be anything, 0x80 included, so only a file without that shape
    # is judged by the pickle / zip markers.
    looks_safetensors = len(head) == 9 and head[8:9] == b"{"
    if not looks_safetensors and (head[:1] == b"\x80" or head[:2] == b"PK"):  # pickle / torch.save zip
        raise CheckpointError(
            f"{path}: looks like a pickle (torch.save); only safetensors checkpoints are loaded"
        )
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a valid safetensors file ({err})") from None
    if _CONFIG_KEY not in metadata:
        raise CheckpointError(f"{path}: no model config in the metadata (key {_CONFIG_KEY!r})")
    try:
        config = parse_config(ModelConfig, json.loads(metadata[_CONFIG_KEY]), source=f"{path} metadata")
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: model config is not JSON ({err})") from None
    return config, state, metadata


def load_checkpoint(path: str | Path) -> Perceiver:
    """The model a checkpoint holds; refuses missing, extra or mis-shaped tensors."""
    config, state, _ = read_checkpoint(path)
    model = build_model(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not match the model config: {err}") from None
    return model


def checkpoint_version(path: str | Path) -> str:
    """A short content hash naming the weights, e.g. `sensor-small@3f2a9c1d04be`."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    return f"{Path(path).stem}@{digest}"


def shipped_checkpoint(preset: str) -> Path | None:
    return next((p for d in _SHIPPED_DIRS if (p := d / f"{preset}.safetensors").is_file()), None)


def checkpoint_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors checkpoint, without reading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a valid safetensors file ({err})") from None


def metadata_model_config(metadata: Mapping[str, str], *, source: str) -> ModelConfig:
    """The model config in a checkpoint's metadata; `source` names the file in errors."""
    raw = metadata.get(_CONFIG_KEY)
    if raw is None:
        raise CheckpointError(f"{source}: no model config in the metadata (key {_CONFIG_KEY!r})")
    try:
        return parse_config(ModelConfig, json.loads(raw), source=f"{source} metadata")
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{source}: model config is not JSON ({err})") from None


def trained_preprocess(path: str | Path) -> dict[str, dict[str, Any]] | None:
    """Per modality, the preprocessor settings the weights were trained with (None: not recorded)."""
    return metadata_preprocess(checkpoint_metadata(path), source=str(path))


def metadata_preprocess(metadata: Mapping[str, str], *, source: str) -> dict[str, dict[str, Any]] | None:
    """The preprocessing in a checkpoint's training config (None: not recorded)."""
    raw = metadata.get(TRAIN_CONFIG_KEY)
    if raw is None:
        return None
    try:
        data = json.loads(raw).get("data", {})
    except (json.JSONDecodeError, AttributeError):
        raise CheckpointError(f"{source}: training config in the metadata is not a JSON object") from None
    # A modality left out of the training config is None in its dump: trained with the defaults.
    return {str(k): dict(v) for k, v in (data.get("preprocess") or {}).items() if v is not None}


def preprocess_mismatches(
    trained: Mapping[str, Mapping[str, Any]], used: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """`modality.key: used here, trained with` for every preprocessing setting (defaults filled in)
    that differs between training and this run: a model fed differently from how it was trained
    predicts garbage without any error, so a pipeline refuses to start on one."""
    from fusion.sample import Modality
    from fusion.sensors import preprocess_settings

    out = []
    for modality in Modality:
        a = preprocess_settings(modality, used.get(modality.value, {}))
        b = preprocess_settings(modality, trained.get(modality.value, {}), source="training config")
        out += [
            f"{modality.value}.{key}: {a.get(key)!r} here, {b.get(key)!r} in training"
            for key in sorted(set(a) | set(b))
            if a.get(key) != b.get(key)
        ]
    return out
