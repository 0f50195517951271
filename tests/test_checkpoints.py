"""Checkpoint round trips (our .pt, rosinality .pt, NVIDIA .pkl) and the no-code-execution guarantee."""

from __future__ import annotations

import io
import math
import pickle
import subprocess
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylerig_au.errors import StylerigError
from stylerig_au.models import Generator, load_generator
from stylerig_au.models.checkpoints import (
    load_nvidia_pickle,
    nvidia_init_kwargs,
    nvidia_to_rosinality,
    save_rosinality,
    save_stylegan2,
)
from stylerig_au.models.safe_pickle import Stub, load_restricted
from stylerig_au.models.stylegan2 import StyleGAN2

from .conftest import make_tiny_stylegan2
from .helpers import require_asset


def _outputs(G: StyleGAN2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(seed))
    w = G.mapping(z, psi=0.7)
    return w, G.synthesis(w.unsqueeze(1).repeat(1, G.num_ws, 1), noise_mode="const")


def _assert_same_generator(a: StyleGAN2, b: StyleGAN2) -> None:
    assert a.config == b.config
    wa, ia = _outputs(a)
    wb, ib = _outputs(b)
    assert torch.equal(wa, wb) and torch.equal(ia, ib)
    assert torch.equal(a.w_avg, b.w_avg)


# ----------------------------------------------------------------------------------------------- ours


def test_our_format_round_trips(tiny_stylegan2, tmp_path):
    path = save_stylegan2(tiny_stylegan2, tmp_path / "g.pt")
    loaded = load_generator(path)
    _assert_same_generator(tiny_stylegan2, loaded)
    assert loaded.name == tiny_stylegan2.name
    assert not list(tmp_path.glob("*.tmp"))


def test_our_format_with_a_wrong_shape_says_what_was_expected(tiny_stylegan2, tmp_path):
    path = save_stylegan2(tiny_stylegan2, tmp_path / "g.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["synthesis.b8.conv1.weight"] = torch.zeros(7, 32, 3, 3)
    ckpt["state_dict"]["synthesis.b8.extra"] = torch.zeros(1)
    del ckpt["state_dict"]["mapping.fc1.bias"]
    torch.save(ckpt, path)
    with pytest.raises(StylerigError) as err:
        load_generator(path)
    msg = str(err.value)
    assert "mapping.fc1.bias" in msg and "synthesis.b8.extra" in msg
    assert "[7, 32, 3, 3], expected [32, 32, 3, 3]" in msg and "\n" not in msg


# ----------------------------------------------------------------------------------------------- rosinality


def _rosinality_reference(ckpt: dict, z: torch.Tensor, psi: float, lr_mlp: float = 0.01) -> tuple[torch.Tensor, ...]:
    """rosinality/stylegan2-pytorch's forward pass, written out independently of our module and ops."""
    sd, avg = ckpt["g_ema"], ckpt["latent_avg"]
    blur = torch.tensor([1.0, 3, 3, 1])
    blur = torch.outer(blur, blur) / 64

    def fir(x, k, up, p0, p1):  # zero-insert upsampling, pad, true convolution with k
        if up > 1:
            y = x.new_zeros(*x.shape[:2], x.shape[2] * up, x.shape[3] * up)
            y[:, :, ::up, ::up] = x
            x = y
        x = F.pad(x, [p0, p1, p0, p1])
        return F.conv2d(x, k.flip([0, 1])[None, None].repeat(x.shape[1], 1, 1, 1), groups=x.shape[1])

    x = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)
    i = 1
    while f"style.{i}.weight" in sd:
        weight = sd[f"style.{i}.weight"]
        x = F.leaky_relu(F.linear(x, weight * lr_mlp / math.sqrt(weight.shape[1])) + sd[f"style.{i}.bias"] * lr_mlp,
                         0.2) * math.sqrt(2)
        i += 1
    w = avg + psi * (x - avg)

    def modconv(x, pre, demod, up=False):
        weight = sd[pre + "conv.weight"]
        _, o, c, k, _ = weight.shape
        mod = sd[pre + "conv.modulation.weight"]
        s = F.linear(w, mod / math.sqrt(mod.shape[1])) + sd[pre + "conv.modulation.bias"]
        n = x.shape[0]
        weight = weight / math.sqrt(c * k * k) * s.view(n, 1, c, 1, 1)
        if demod:
            weight = weight * torch.rsqrt(weight.square().sum([2, 3, 4]) + 1e-8).view(n, o, 1, 1, 1)
        x = x.reshape(1, n * c, *x.shape[2:])
        if up:
            weight = weight.transpose(1, 2).reshape(n * c, o, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, groups=n)
            return fir(out.view(n, o, *out.shape[2:]), blur * 4, 1, 1, 1)
        out = F.conv2d(x, weight.reshape(n * o, c, k, k), padding=k // 2, groups=n)
        return out.view(n, o, *out.shape[2:])

    def styled(x, pre, noise, up=False):
        out = modconv(x, pre, True, up) + sd[pre + "noise.weight"] * sd[noise]
        return F.leaky_relu(out + sd[pre + "activate.bias"].view(1, -1, 1, 1), 0.2) * math.sqrt(2)

    def rgb(x, pre, skip):
        out = modconv(x, pre, False) + sd[pre + "bias"]
        return out if skip is None else out + fir(skip, blur * 4, 2, 2, 1)

    out = styled(sd["input.input"].repeat(z.shape[0], 1, 1, 1), "conv1.", "noises.noise_0")
    skip = rgb(out, "to_rgb1.", None)
    j = 0
    while f"to_rgbs.{j}.bias" in sd:
        out = styled(out, f"convs.{2 * j}.", f"noises.noise_{2 * j + 1}", up=True)
        out = styled(out, f"convs.{2 * j + 1}.", f"noises.noise_{2 * j + 2}")
        skip = rgb(out, f"to_rgbs.{j}.", skip)
        j += 1
    return w, skip


def test_rosinality_checkpoint_matches_an_independent_rosinality_forward(tiny_stylegan2, tmp_path):
    path = save_rosinality(tiny_stylegan2, tmp_path / "550000.pt")
    ckpt = torch.load(path, weights_only=True)
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    w_ref, img_ref = _rosinality_reference(ckpt, z, psi=0.7)
    G = load_generator(path)
    w, img = _outputs(G)
    torch.testing.assert_close(w, w_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(img, img_ref, atol=1e-4, rtol=1e-4)
    _assert_same_generator(tiny_stylegan2, G)


def test_rosinality_train_checkpoint_with_args_and_no_latent_avg(tiny_stylegan2, tmp_path):
    import argparse

    sd = {k: v.clone() for k, v in tiny_stylegan2.state_dict().items()}
    g_ema = nvidia_to_rosinality(sd, tiny_stylegan2.config)
    g_ema["convs.0.conv.blur.kernel"] = torch.ones(4, 4)  # rosinality's derived buffers are accepted and dropped
    g_ema["to_rgbs.0.upsample.kernel"] = torch.ones(4, 4)
    path = tmp_path / "train.pt"
    torch.save({"g_ema": g_ema, "g": g_ema, "args": argparse.Namespace(size=32, lr_mlp=0.01)}, path)
    G = load_generator(path)
    # without latent_avg, w_avg is re-estimated from 10k mapped samples (the fixture used 2k)
    assert torch.allclose(G.w_avg, tiny_stylegan2.w_avg, atol=0.1)
    ws = G.w_avg.expand(1, G.num_ws, -1)
    assert torch.equal(G.synthesis(ws), tiny_stylegan2.synthesis(ws))
    z = torch.randn(2, 32)
    assert torch.equal(G.mapping(z), tiny_stylegan2.mapping(z))


def test_rosinality_unexpected_key_is_named(tiny_stylegan2, tmp_path):
    path = save_rosinality(tiny_stylegan2, tmp_path / "r.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["g_ema"]["style.99.gamma"] = torch.zeros(1)
    torch.save(ckpt, path)
    with pytest.raises(StylerigError, match=r"unexpected key\(s\) style\.99\.gamma"):
        load_generator(path)


# ----------------------------------------------------------------------------------------------- NVIDIA


NVIDIA_CLASS = {"StyleGAN2": "Generator"}


def _write_fake_nvidia_code(root: Path, marker: Path) -> str:
    """Importable ``torch_utils.persistence`` and ``dnnlib.util`` that behave like NVIDIA's: the
    reconstructor execs the module source found in the pickle. Returns that source (the payload)."""
    (root / "torch_utils").mkdir(parents=True)
    (root / "torch_utils" / "__init__.py").write_text("")
    (root / "torch_utils" / "persistence.py").write_text(textwrap.dedent("""
        import types

        def _reconstruct_persistent_obj(meta):
            module = types.ModuleType("_imported_module")
            exec(meta["module_src"], module.__dict__)
            obj = module.__dict__[meta["class_name"]].__new__(module.__dict__[meta["class_name"]])
            obj.__dict__.update(meta["state"])
            return obj
    """))
    (root / "dnnlib").mkdir()
    (root / "dnnlib" / "__init__.py").write_text("")
    (root / "dnnlib" / "util.py").write_text("class EasyDict(dict):\n    pass\n")
    classes = "".join(f"class {name}:\n    pass\n" for name in
                      ("Generator", "MappingNetwork", "SynthesisNetwork", "SynthesisBlock", "SynthesisLayer",
                       "ToRGBLayer", "FullyConnectedLayer"))
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('code from the pickle ran')\n{classes}"


class _Persistent:
    """Pickles like an NVIDIA ``persistent_class`` module: reconstructor(meta with source, class name, state)."""

    def __init__(self, reconstruct, source: str, class_name: str, state: dict) -> None:
        self.reconstruct, self.source, self.class_name, self.state = reconstruct, source, class_name, state

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.source, class_name=self.class_name, state=self.state)
        return (self.reconstruct, (meta,))


class _OpenOnLoad:
    """A second payload: unpickling calls ``open(path, 'w')``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _as_persistent(module: torch.nn.Module, reconstruct, source: str, init_kwargs: dict | None = None) -> _Persistent:
    state: dict = {"training": False, "_parameters": OrderedDict(), "_buffers": OrderedDict(),
                   "_non_persistent_buffers_set": set(), "_modules": OrderedDict(),
                   "_init_args": (), "_init_kwargs": init_kwargs or {}}
    for name, p in module.named_parameters(recurse=False):
        state["_parameters"][name] = torch.nn.Parameter(p.detach().clone(), requires_grad=False)
    for name, b in module.named_buffers(recurse=False):  # NVIDIA keeps resample_filter as a persistent buffer
        state["_buffers"][name] = b.clone()
    for name, child in module.named_children():
        state["_modules"][name] = _as_persistent(child, reconstruct, source)
    for key, value in vars(module).items():  # NVIDIA's float attributes are numpy scalars (np.sqrt(...))
        if not key.startswith("_") and isinstance(value, (int, float, str, bool, type(None))):
            state[key] = np.float64(value) if isinstance(value, float) else value
    class_name = NVIDIA_CLASS.get(type(module).__name__, type(module).__name__)
    return _Persistent(reconstruct, source, class_name, state)


@pytest.fixture
def nvidia_pickle(tiny_stylegan2, tmp_path, monkeypatch):
    """An NVIDIA-style snapshot of ``tiny_stylegan2`` whose normal unpickling runs two payloads."""
    fake = tmp_path / "fake_nvidia_code"
    markers = tmp_path / "persistence_payload_ran", tmp_path / "open_payload_ran"
    source = _write_fake_nvidia_code(fake, markers[0])
    monkeypatch.syspath_prepend(str(fake))
    import dnnlib.util
    import torch_utils.persistence

    kwargs = nvidia_init_kwargs(tiny_stylegan2.config)
    kwargs = dnnlib.util.EasyDict(kwargs, mapping_kwargs=dnnlib.util.EasyDict(kwargs["mapping_kwargs"]),
                                  synthesis_kwargs=dnnlib.util.EasyDict(kwargs["synthesis_kwargs"]))
    G = _as_persistent(tiny_stylegan2, torch_utils.persistence._reconstruct_persistent_obj, source, kwargs)
    snapshot = {"G": G, "D": None, "G_ema": G, "augment_pipe": None, "payload": _OpenOnLoad(markers[1]),
                "training_set_kwargs": dnnlib.util.EasyDict(path="ffhq.zip", resolution=32)}
    path = tmp_path / "network-snapshot-000000.pkl"
    with open(path, "wb") as f:
        pickle.dump(snapshot, f)
    for name in ("torch_utils.persistence", "torch_utils", "dnnlib.util", "dnnlib"):
        monkeypatch.delitem(sys.modules, name)
    assert not any(m.exists() for m in markers)
    return path, fake, markers


def test_nvidia_payloads_are_live_when_unpickled_normally(nvidia_pickle):
    """Control: a plain ``pickle.load`` of the test file does run both payloads."""
    path, fake, markers = nvidia_pickle
    code = f"import pickle, sys; sys.path.insert(0, {str(fake)!r}); pickle.load(open({str(path)!r}, 'rb'))"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert all(m.exists() for m in markers)


def test_nvidia_pickle_loads_without_running_its_code(nvidia_pickle, tiny_stylegan2):
    path, _, markers = nvidia_pickle  # the fake NVIDIA packages stay importable on sys.path here
    G = load_generator(path)
    assert not any(m.exists() for m in markers)
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    _assert_same_generator(tiny_stylegan2, G)


def test_restricted_unpickler_turns_calls_into_inert_stubs(tmp_path):
    marker = tmp_path / "ran"
    data = pickle.dumps({"x": _OpenOnLoad(marker), "t": torch.arange(3.0)})
    loaded = load_restricted(io.BytesIO(data))
    assert not marker.exists()
    assert torch.equal(loaded["t"], torch.arange(3.0))
    assert isinstance(loaded["x"], Stub) and repr(loaded["x"]) == "<stub io.open>"


def test_restricted_unpickler_rebuilds_tensors_and_plain_values():
    with_state = torch.arange(4.0)
    with_state.note = "python attribute"  # pickles through torch._tensor._rebuild_from_type_v2
    data = {"state": with_state, "view": torch.arange(10.0)[2:6], "t": torch.zeros(3, 4).t(),
            "half": torch.ones(2, dtype=torch.float16), "np": np.float64(1.5), "dtype": torch.float16,
            "size": torch.Size([2, 3]), "od": OrderedDict(a=1), "set": {1, 2}}
    out = load_restricted(io.BytesIO(pickle.dumps(data)))
    for key in ("state", "view", "t", "half"):
        assert type(out[key]) is torch.Tensor and torch.equal(out[key], data[key]), key
    assert out["np"] == 1.5 and out["dtype"] is torch.float16 and out["size"] == (2, 3)
    assert out["od"] == OrderedDict(a=1) and out["set"] == {1, 2}


def test_nvidia_pickle_mismatch_and_wrong_kinds(tiny_stylegan2, tmp_path, monkeypatch):
    source = "class Generator:\n    pass\n"

    def reconstruct(meta):  # never called on load; only its name is pickled
        raise AssertionError

    reconstruct.__module__, reconstruct.__qualname__ = "torch_utils.persistence", "_reconstruct_persistent_obj"
    fake = tmp_path / "fake"
    (fake / "torch_utils").mkdir(parents=True)
    (fake / "torch_utils" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(fake))
    import torch_utils

    persistence = type(sys)("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = reconstruct
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", persistence)
    monkeypatch.setattr(torch_utils, "persistence", persistence, raising=False)

    def dump(G, name):
        path = tmp_path / name
        path.write_bytes(pickle.dumps({"G_ema": G}))
        return path

    G = _as_persistent(tiny_stylegan2, reconstruct, source, nvidia_init_kwargs(tiny_stylegan2.config))
    G.state["_modules"]["synthesis"].state["_modules"]["b8"].state["_modules"]["conv1"].state["_parameters"][
        "weight"] = torch.zeros(32, 32, 1, 1)
    with pytest.raises(StylerigError, match=r"synthesis\.b8\.conv1\.weight' has shape \[32, 32, 1, 1\], expected "
                                            r"\[32, 32, 3, 3\]"):
        load_nvidia_pickle(dump(G, "bad_shape.pkl"))

    G = _as_persistent(tiny_stylegan2, reconstruct, source, nvidia_init_kwargs(tiny_stylegan2.config))
    G.state["_modules"]["synthesis"].state["_modules"]["input"] = _as_persistent(torch.nn.Linear(2, 2), reconstruct,
                                                                                 source)
    with pytest.raises(StylerigError, match="StyleGAN3"):
        load_nvidia_pickle(dump(G, "sg3.pkl"))

    cond = dict(nvidia_init_kwargs(tiny_stylegan2.config), c_dim=10)
    with pytest.raises(StylerigError, match="c_dim=10"):
        load_nvidia_pickle(dump(_as_persistent(tiny_stylegan2, reconstruct, source, cond), "cond.pkl"))

    (tmp_path / "d.pkl").write_bytes(pickle.dumps({"D": 1}))
    with pytest.raises(StylerigError, match="no 'G_ema' or 'G'"):
        load_nvidia_pickle(tmp_path / "d.pkl")

    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(StylerigError, match="cannot read the pickle"):
        load_nvidia_pickle(tmp_path / "junk.pkl")


# ----------------------------------------------------------------------------------------------- dispatch


def test_load_generator_dispatch_errors(tmp_path):
    with pytest.raises(StylerigError, match="unknown generator"):
        load_generator("stylegan9-ffhq")
    with pytest.raises(StylerigError, match="checkpoint not found"):
        load_generator(tmp_path / "missing.pkl")
    (tmp_path / "g.onnx").write_bytes(b"x")
    with pytest.raises(StylerigError, match="unsupported checkpoint type"):
        load_generator(tmp_path / "g.onnx")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(StylerigError, match="unknown checkpoint layout"):
        load_generator(tmp_path / "other.pt")


def test_pt_with_code_is_refused_by_weights_only(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"g_ema": _OpenOnLoad(marker)}, tmp_path / "evil.pt")
    with pytest.raises(StylerigError, match="weights-only"):
        load_generator(tmp_path / "evil.pt")
    assert not marker.exists()


def test_larger_config_round_trips_through_ours_and_rosinality(tmp_path):
    """64² with 3 mapping layers, fp16 settings and clamping: every format keeps the config."""
    G = make_tiny_stylegan2(resolution=64, dim=16, seed=3, num_fp16_res=2, conv_clamp=256.0)
    _assert_same_generator(G, load_generator(save_stylegan2(G, tmp_path / "ours.pt")))
    rosi = load_generator(save_rosinality(G, tmp_path / "rosi.pt"))
    assert torch.equal(_outputs(rosi)[0], _outputs(G)[0])  # rosinality has no clamp / fp16 settings


@pytest.mark.slow
def test_default_generator_is_the_embedded_mobilestylegan():
    require_asset("mobilestylegan-ffhq-1024")
    G = load_generator()
    assert isinstance(G, Generator)
    assert (G.resolution, G.z_dim, G.w_dim) == (1024, 512, 512) and len(G.slots) == G.num_ws
