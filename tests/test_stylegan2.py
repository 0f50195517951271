"""StyleGAN2 module: protocol surface, shapes, W+ slot layout, noise modes, truncation, op implementations."""

from __future__ import annotations

import pytest
import torch

from stylerig_au.errors import StylerigError
from stylerig_au.models import Generator
from stylerig_au.models.stylegan2 import StyleGAN2, StyleGAN2Config


def _ws(G: StyleGAN2, n: int = 2, seed: int = 0, psi: float = 1.0) -> torch.Tensor:
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    return G.mapping(z, psi=psi).unsqueeze(1).repeat(1, G.num_ws, 1)


def test_protocol_surface_and_shapes(tiny_stylegan2):
    G = tiny_stylegan2
    assert isinstance(G, Generator)
    assert (G.z_dim, G.w_dim, G.resolution, G.num_ws) == (32, 32, 32, 8)
    assert G.w_avg.shape == (32,) and G.w_avg.dtype == torch.float32
    img = G.synthesis(_ws(G, n=3))
    assert img.shape == (3, 3, 32, 32) and img.dtype == torch.float32 and torch.isfinite(img).all()


@pytest.mark.parametrize("resolution, num_ws", [(4, 2), (64, 10), (256, 14), (1024, 18)])
def test_num_ws_and_slots_follow_nvidia_layout(resolution, num_ws):
    cfg = StyleGAN2Config(z_dim=8, w_dim=8, resolution=resolution, channel_base=8 * resolution, channel_max=8,
                          mapping_layers=1)
    G = StyleGAN2(cfg)
    assert G.num_ws == num_ws == len(G.slots)
    assert [s.index for s in G.slots] == list(range(num_ws))
    assert G.slots[0].resolution == 4 and G.slots[-1].resolution == resolution
    assert all(a.resolution <= b.resolution for a, b in zip(G.slots, G.slots[1:]))
    if resolution >= 64:
        assert {s.group for s in G.slots} == {"coarse", "middle", "fine"}


def test_config_f_channels():
    cfg = StyleGAN2Config()
    assert [cfg.channels(r) for r in cfg.block_resolutions] == [512, 512, 512, 512, 512, 256, 128, 64, 32]


def test_each_slot_changes_the_image_only_through_its_layers(tiny_stylegan2):
    G = tiny_stylegan2
    ws = _ws(G, n=1)
    base = G.synthesis(ws)
    for i in range(G.num_ws):
        edited = ws.clone()
        edited[:, i] += 2.0
        assert not torch.allclose(G.synthesis(edited), base, atol=1e-5), f"slot {i} has no effect"


def test_truncation(tiny_stylegan2):
    G = tiny_stylegan2
    z = torch.randn(4, G.z_dim)
    w = G.mapping(z)
    assert torch.allclose(G.mapping(z, psi=0.0), G.w_avg.expand(4, -1), atol=1e-6)
    assert torch.allclose(G.mapping(z, psi=0.5), G.w_avg + 0.5 * (w - G.w_avg), atol=1e-5)


def test_noise_modes(tiny_stylegan2):
    G = tiny_stylegan2
    ws = _ws(G)
    const_a, const_b = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
    assert torch.equal(const_a, const_b)
    torch.manual_seed(1)
    rand_a = G.synthesis(ws, noise_mode="random")
    rand_b = G.synthesis(ws, noise_mode="random")
    assert not torch.allclose(rand_a, rand_b)
    none = G.synthesis(ws, noise_mode="none")
    assert not torch.allclose(none, const_a)
    with pytest.raises(StylerigError, match="noise_mode"):
        G.synthesis(ws, noise_mode="fixed")


def test_fused_and_unfused_modconv_agree(tiny_stylegan2):
    ws = _ws(tiny_stylegan2)
    fused = tiny_stylegan2.synthesis(ws, fused_modconv=True)
    unfused = tiny_stylegan2.synthesis(ws, fused_modconv=False)
    torch.testing.assert_close(fused, unfused, atol=1e-4, rtol=1e-4)


def test_ref_impl_matches_auto_on_cpu(tiny_stylegan2):
    ws = _ws(tiny_stylegan2)
    auto = tiny_stylegan2.synthesis(ws)
    ref = tiny_stylegan2.set_impl("ref").synthesis(ws)
    assert tiny_stylegan2.impl == "ref" and all(m.impl == "ref" for m in tiny_stylegan2.modules() if hasattr(m, "impl"))
    torch.testing.assert_close(auto, ref)
    with pytest.raises(StylerigError, match="impl"):
        tiny_stylegan2.set_impl("triton")


def test_synthesis_is_differentiable_wrt_ws(tiny_stylegan2):
    ws = _ws(tiny_stylegan2).requires_grad_(True)
    tiny_stylegan2.synthesis(ws).square().mean().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0


def test_upsampling_conv_matches_upsample_then_conv():
    """conv0 (transposed conv + blur) equals zero-insert + blur + 3x3 convolution (NVIDIA: flip_weight=False for up=2)."""
    import torch.nn.functional as F

    from stylerig_au import ops
    from stylerig_au.models.stylegan2 import _conv2d_resample

    torch.manual_seed(0)
    x, w = torch.randn(2, 4, 8, 8), torch.randn(5, 4, 3, 3)
    f = ops.setup_filter([1, 3, 3, 1])
    ours = _conv2d_resample(x, w, f, up=2, padding=1, groups=1, impl="ref")
    up = ops.upsample2d(x, f, impl="ref")  # zero-insert + blur (gain 4)
    expected = F.conv2d(up, w.flip([2, 3]), padding=1)  # a transposed conv convolves (flipped kernel)
    assert ours.shape == expected.shape == (2, 5, 16, 16)
    # the two orders differ only at the border (where the blur meets the zero padding)
    torch.testing.assert_close(ours[..., 2:-2, 2:-2], expected[..., 2:-2, 2:-2], atol=1e-4, rtol=1e-4)


def test_bad_inputs_raise_one_line_errors(tiny_stylegan2):
    with pytest.raises(StylerigError, match=r"\[N, 32\]"):
        tiny_stylegan2.mapping(torch.randn(2, 31))
    with pytest.raises(StylerigError, match=r"\[N, 8, 32\]"):
        tiny_stylegan2.synthesis(torch.randn(2, 7, 32))
    with pytest.raises(StylerigError, match="power of two"):
        StyleGAN2Config(resolution=48)
    with pytest.raises(StylerigError, match="channel_base"):
        StyleGAN2Config(resolution=1024, channel_base=512)


def test_fp16_blocks_agree_with_fp32(tiny_stylegan2):
    """The fp16 path (pre-normalised modulation, fp16 activations, fp32 image) run block by block on CPU."""
    S = tiny_stylegan2.synthesis
    ws = _ws(tiny_stylegan2)
    expected = S(ws)
    x = img = None
    w_idx = 0
    for res in S.block_resolutions:
        block = getattr(S, f"b{res}")
        dtype = torch.float16 if res >= 16 else torch.float32
        x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + 1), dtype=dtype, noise_mode="const", fused=None)
        assert x.dtype == dtype and img.dtype == torch.float32
        w_idx += block.num_conv
    assert (img - expected).abs().max() < 0.02 * expected.abs().max()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp16_and_impls_agree_with_cpu(tiny_stylegan2, no_tf32):
    ws = _ws(tiny_stylegan2)
    cpu = tiny_stylegan2.synthesis(ws)
    G = tiny_stylegan2.to("cuda")
    for impl in ("ref", "cuda"):
        out = G.set_impl(impl).synthesis(ws.cuda(), force_fp32=True)
        torch.testing.assert_close(out.cpu(), cpu, atol=1e-3, rtol=1e-3)
    G.synthesis.num_fp16_res = 2
    half = G.set_impl("auto").synthesis(ws.cuda())
    assert half.dtype == torch.float32
    assert (half.cpu() - cpu).abs().mean() < 0.05 * cpu.abs().mean()


def test_seed_ws_maps_consecutive_seeds_onto_every_slot(tiny_stylegan2):
    from stylerig_au.models import seed_to_z, seed_ws

    G = tiny_stylegan2
    ws = seed_ws(G, 5, 3, psi=0.7)
    assert ws.shape == (3, G.num_ws, G.w_dim) and not ws.requires_grad
    with torch.no_grad():
        for i in range(3):
            w = G.mapping(seed_to_z(5 + i, G.z_dim), psi=0.7)[0]
            torch.testing.assert_close(ws[i], w[None].expand(G.num_ws, -1))
