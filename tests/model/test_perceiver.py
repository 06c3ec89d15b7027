import math

import pytest
import torch

from fusion.model import ModalityInput, build_model, preset_config
from fusion.model.info import count_flops, count_parameters
from fusion.sample import Modality
from tests.model.conftest import make_inputs, tiny_config


def _model(**overrides):
    torch.manual_seed(0)
    return build_model(tiny_config(**overrides)).eval()


def _logits(model, inputs):
    with torch.no_grad():
        return model(inputs).logits


def test_output_shapes(config):
    out = build_model(config)(make_inputs(batch=3))
    assert out.logits.shape == (3, config.num_classes)
    assert out.position is not None and out.position.shape == (3, 3)


def test_permuting_point_rows_leaves_output_unchanged():
    model = _model()
    inputs = make_inputs(batch=2, points=40)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(1))
    lidar = inputs[Modality.LIDAR]
    shuffled = {
        **inputs,
        Modality.LIDAR: ModalityInput(values=lidar.values[:, perm], positions=lidar.positions[:, perm]),
    }
    before, after = _logits(model, inputs), _logits(model, shuffled)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    # The check can fail: moving values without their positions changes the output.
    broken = {
        **inputs,
        Modality.LIDAR: ModalityInput(values=lidar.values[:, perm], positions=lidar.positions),
    }
    assert (_logits(model, broken) - before).abs().max() > 1e-4


def test_padded_batch_equals_each_sample_alone():
    model = _model()
    counts = [7, 20, 13]
    full = make_inputs(batch=3, points=max(counts))
    mask = torch.zeros(3, max(counts), dtype=torch.bool)
    for i, n in enumerate(counts):
        mask[i, :n] = True
    lidar = full[Modality.LIDAR]
    # Padded rows hold garbage on purpose: the mask alone must hide them.
    lidar.values[~mask] = 123.0
    batched = {
        **full,
        Modality.LIDAR: ModalityInput(values=lidar.values, positions=lidar.positions, mask=mask),
    }
    out = _logits(model, batched)
    for i, n in enumerate(counts):
        alone = {
            Modality.CAMERA: ModalityInput(values=full[Modality.CAMERA].values[i : i + 1], grid=(8, 8)),
            Modality.MICROPHONE: ModalityInput(
                values=full[Modality.MICROPHONE].values[i : i + 1], grid=(4, 6)
            ),
            Modality.LIDAR: ModalityInput(
                values=lidar.values[i : i + 1, :n], positions=lidar.positions[i : i + 1, :n]
            ),
        }
        torch.testing.assert_close(out[i : i + 1], _logits(model, alone), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "subset",
    [
        (Modality.CAMERA,),
        (Modality.MICROPHONE,),
        (Modality.LIDAR,),
        (Modality.CAMERA, Modality.MICROPHONE),
        (Modality.CAMERA, Modality.LIDAR),
        (Modality.MICROPHONE, Modality.LIDAR),
        (Modality.CAMERA, Modality.MICROPHONE, Modality.LIDAR),
    ],
)
def test_any_subset_of_modalities_runs(subset):
    model = _model()
    inputs = {m: x for m, x in make_inputs().items() if m in subset}
    out = model(inputs)
    assert out.logits.shape == (2, 5) and torch.isfinite(out.logits).all()


def test_missing_modality_is_not_zeros():
    model = _model()
    inputs = make_inputs()
    without = {m: x for m, x in inputs.items() if m is not Modality.MICROPHONE}
    zeros = {**inputs, Modality.MICROPHONE: ModalityInput(values=torch.zeros(2, 24, 1), grid=(4, 6))}
    assert (_logits(model, without) - _logits(model, zeros)).abs().max() > 1e-4


def test_missing_modality_per_sample_via_mask_equals_leaving_it_out():
    model = _model()
    inputs = make_inputs(batch=2)
    mic = inputs[Modality.MICROPHONE]
    mask = torch.tensor([[True] * 24, [False] * 24])
    masked = {**inputs, Modality.MICROPHONE: ModalityInput(values=mic.values, grid=(4, 6), mask=mask)}
    second_alone = {
        m: ModalityInput(
            values=x.values[1:], grid=x.grid, positions=None if x.positions is None else x.positions[1:]
        )
        for m, x in inputs.items()
        if m is not Modality.MICROPHONE
    }
    torch.testing.assert_close(_logits(model, masked)[1:], _logits(model, second_alone), atol=1e-5, rtol=1e-5)


def test_every_parameter_receives_a_gradient():
    model = build_model(tiny_config()).train()
    out = model(make_inputs())
    (out.logits.square().mean() + out.position.square().mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


def test_weight_sharing_changes_parameter_count_exactly():
    base = build_model(tiny_config())
    cross, block = count_parameters(base.cross[0]), count_parameters(base.blocks[0])
    n_iter, per = 3, 2
    shared = count_parameters(base)
    unshared_cross = count_parameters(build_model(tiny_config(share_cross_weights=False)))
    unshared_latent = count_parameters(build_model(tiny_config(share_latent_weights=False)))
    assert len(base.cross) == 2 and len(base.blocks) == per
    assert unshared_cross - shared == (n_iter - 2) * cross
    assert unshared_latent - shared == (n_iter - 1) * per * block


def test_unshared_model_runs_each_iteration_with_its_own_weights():
    model = _model(share_cross_weights=False, share_latent_weights=False)
    assert [model.cross_index(i) for i in range(3)] == [0, 1, 2]
    assert [list(model.block_indices(i)) for i in range(3)] == [[0, 1], [2, 3], [4, 5]]
    assert torch.isfinite(_logits(model, make_inputs())).all()


def test_paper_imagenet_counts_44_9m_parameters():
    with torch.device("meta"):
        model = build_model(preset_config("paper-imagenet"))
    n = count_parameters(model)
    assert round(n / 1e6, 1) == 44.9, n


def test_paper_imagenet_flops_match_the_paper():
    flops = count_flops(preset_config("paper-imagenet"), {Modality.CAMERA: (224, 224)}, fast=False)
    assert math.isclose(flops, 707.2e9, rel_tol=0.02), flops / 1e9


def test_fast_path_executes_fewer_flops_than_plain():
    cfg = preset_config("sensor-small")
    shapes = {m: tuple(cfg.inputs[m].example_shape) for m in cfg.modalities}
    assert count_flops(cfg, shapes, fast=True) < 0.8 * count_flops(cfg, shapes, fast=False)


def _replace(inputs, modality, **fields):
    x = inputs[modality]
    kw = {"values": x.values, "positions": x.positions, "grid": x.grid, "mask": x.mask, **fields}
    return {**inputs, modality: ModalityInput(**kw)}


@pytest.mark.parametrize(
    ("make_bad", "message"),
    [
        (
            lambda i: _replace(i, Modality.CAMERA, values=torch.rand(2, 64, 4)),
            "camera: expected 3 value channels, got 4",
        ),
        (
            lambda i: _replace(i, Modality.LIDAR, positions=i[Modality.LIDAR].positions * 3),
            "lidar: positions outside",
        ),
        (
            lambda i: _replace(i, Modality.MICROPHONE, values=torch.full((2, 24, 1), float("nan"))),
            "microphone: values contain NaN",
        ),
        (
            lambda i: _replace(
                i,
                Modality.LIDAR,
                positions=i[Modality.LIDAR].positions.index_fill(1, torch.tensor([0]), float("nan")),
            ),
            "lidar: positions contain NaN",
        ),
        (
            lambda i: _replace(i, Modality.LIDAR, values=torch.rand(2, 0, 2), positions=torch.rand(2, 0, 3)),
            "lidar: empty segment",
        ),
        (lambda i: _replace(i, Modality.CAMERA, grid=(4, 4)), "camera: grid input needs"),
        (lambda i: {**i, "radar": i[Modality.CAMERA]}, "unknown modality 'radar'"),
        (
            lambda i: _replace(i, Modality.LIDAR, positions=torch.rand(2, 20, 2)),
            r"lidar: positions must be \[2, 20, 3\]",
        ),
        (
            lambda i: _replace(i, Modality.CAMERA, values=torch.rand(3, 64, 3)),
            "batch sizes differ across modalities: camera 3, microphone 2, lidar 2",
        ),
        (lambda i: {}, "no modality given"),
    ],
)
def test_bad_inputs_raise_value_error_naming_modality_and_problem(make_bad, message):
    model = _model()
    with pytest.raises(ValueError, match=message):
        model(make_bad(make_inputs()))


def test_modality_not_configured_for_the_model_is_refused():
    model = build_model(
        tiny_config(inputs={"camera": tiny_config().inputs[Modality.CAMERA].model_dump()}, min_padding=0)
    )
    with pytest.raises(ValueError, match="lidar: modality not configured for this model"):
        model({m: x for m, x in make_inputs().items() if m is not Modality.MICROPHONE})


def test_sample_with_no_rows_anywhere_is_refused():
    model = _model()
    inputs = {Modality.LIDAR: make_inputs()[Modality.LIDAR]}
    inputs = _replace(inputs, Modality.LIDAR, mask=torch.tensor([[True] * 20, [False] * 20]))
    with pytest.raises(ValueError, match=r"samples \[1\] have no input rows"):
        model(inputs)
