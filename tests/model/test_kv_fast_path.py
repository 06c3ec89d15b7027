"""The factored K/V projection must equal the plain LayerNorm + Linear over the byte array."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fusion.model import ModalityInput, build_model
from fusion.sample import Modality
from tests.model.conftest import make_inputs, tiny_config


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _randomize_norms(model):
    # Fresh LayerNorms are (1, 0); exactness must hold for any affine parameters.
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))


@pytest.mark.parametrize("grad", [False, True])
def test_fast_kv_projection_equals_plain(grad):
    torch.manual_seed(0)
    model = build_model(tiny_config(num_cross_attends=2))
    _randomize_norms(model)
    inputs = make_inputs(batch=3, points=30)
    with torch.set_grad_enabled(grad):
        byte = model.adapter(inputs)
        kv = model.cross[0].kv
        plain = kv(byte, fast=False)
        fast = kv(byte, fast=True)
        fast_cached = kv(byte, fast=True)
    assert plain.shape == fast.shape == (3, 64 + 24 + 30, 2 * model.config.qk_channels)
    assert _rel_err(fast, plain) <= 1e-5
    assert _rel_err(fast_cached, plain) <= 1e-5
    assert bool(kv._const_cache) is not grad  # cached only when no gradient must flow


def test_fast_and_plain_models_agree_on_outputs_and_gradients():
    torch.manual_seed(0)
    fast = build_model(tiny_config())
    _randomize_norms(fast)
    plain = build_model(tiny_config(kv_fast_path=False))
    plain.load_state_dict(fast.state_dict())
    inputs = make_inputs(batch=2)
    outs = []
    for model in (fast, plain):
        out = model(inputs)
        out.logits.sum().backward()
        outs.append(out.logits.detach())
    assert _rel_err(outs[0], outs[1]) <= 1e-5
    grads_fast = dict(fast.named_parameters())
    for name, p in plain.named_parameters():
        torch.testing.assert_close(grads_fast[name].grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_cached_constant_projection_follows_parameter_updates():
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    inputs = make_inputs()
    with torch.no_grad():
        model(inputs)  # fills the cache
        model.cross[0].kv.proj.weight.mul_(1.5)  # in-place, as an optimizer step does
        model.adapter.encoders["lidar"].padding.add_(0.3)
        fast = model(inputs).logits
        model.kv_fast_path = False
        plain = model(inputs).logits
    assert _rel_err(fast, plain) <= 1e-5


def test_grid_encoding_is_built_once_per_shape():
    model = build_model(tiny_config())
    enc = model.adapter.encoders["camera"]
    a = enc.grid_encoding((8, 8), torch.device("cpu"), torch.float32)
    b = enc.grid_encoding((8, 8), torch.device("cpu"), torch.float32)
    c = enc.grid_encoding((4, 16), torch.device("cpu"), torch.float32)
    assert a is b and c is not a and c.shape == (64, enc.cfg.fourier_channels)


def _kv_flops(num_bands: int, fast: bool) -> int:
    cam = {**tiny_config().inputs[Modality.CAMERA].model_dump(), "num_bands": num_bands}
    # Q/K/V width pinned so that only the projection's input width depends on the bands.
    cfg = tiny_config(inputs={"camera": cam}, min_padding=0, cross_qk_channels=16, latent_dim=64)
    model = build_model(cfg).eval()
    inputs = {Modality.CAMERA: ModalityInput(values=torch.rand(4, 64 * 64, 3), grid=(64, 64))}
    with torch.no_grad():
        byte = model.adapter(inputs)
        kv = model.cross[0].kv
        kv(byte, fast=fast)  # warm the cache, as a running model has
        with FlopCounterMode(display=False) as counter:
            kv(byte, fast=fast)
    return counter.get_total_flops()


def test_fast_kv_cost_does_not_grow_with_bands():
    assert _kv_flops(8, fast=True) == _kv_flops(64, fast=True)
    assert _kv_flops(64, fast=False) > 5 * _kv_flops(8, fast=False)
    assert _kv_flops(64, fast=True) * 20 < _kv_flops(64, fast=False)


def test_cache_follows_autocast_and_works_for_models_built_in_inference_mode():
    torch.manual_seed(0)
    with torch.inference_mode():
        model = build_model(tiny_config()).eval()
        model(make_inputs())  # no "inference tensors do not track version counter"
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    inputs = make_inputs()
    with torch.no_grad():
        fp32 = model(inputs).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(inputs)  # caches bf16 constant terms
        again = model(inputs).logits  # must not reuse them
    assert torch.equal(fp32, again)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("rows", [7, 50])
def test_chunked_cross_attention_equals_whole_array(fast, rows):
    """Inference in pieces of `rows` rows (online softmax) gives the whole-array outputs, also
    when a piece holds only padding for one sample and pieces straddle modality boundaries."""
    inputs = make_inputs(batch=3, points=20)
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[1, 4:] = False  # sample 1: 4 real LiDAR points, then 16 padded rows (whole pieces of 7)
    lidar = inputs[Modality.LIDAR]
    inputs[Modality.LIDAR] = ModalityInput(values=lidar.values, positions=lidar.positions, mask=mask)
    torch.manual_seed(0)
    whole = build_model(tiny_config(kv_chunk_rows=None, kv_fast_path=fast)).eval()
    chunked = build_model(tiny_config(kv_chunk_rows=rows, kv_fast_path=fast)).eval()
    chunked.load_state_dict(whole.state_dict())
    pieces: list[int] = []
    for cross in chunked.cross:
        cross.kv.register_forward_hook(lambda _m, _a, out: pieces.append(out.shape[1]))
    with torch.inference_mode():
        ref, got = whole(inputs), chunked(inputs)
    assert pieces and max(pieces) <= rows  # never the whole 108-row array at once
    torch.testing.assert_close(got.logits, ref.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.position, ref.position, rtol=1e-5, atol=1e-5)
    # With autograd on (training) the whole array goes through SDPA: gradients as before.
    out = chunked(inputs)
    assert out.logits.requires_grad
    torch.testing.assert_close(out.logits.detach(), ref.logits, rtol=1e-5, atol=1e-5)
