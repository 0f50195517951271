"""W+ inversion with a tiny random StyleGAN2: convergence, batching, seeds, resume, sharding, files, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stylerig_au import invert
from stylerig_au.cli import main
from stylerig_au.edit import media
from stylerig_au.perceptual import LPIPS


@pytest.fixture(scope="module")
def small_lpips() -> LPIPS:
    """An LPIPS with random VGG weights and uniform positive linear layers (no asset needed)."""
    torch.manual_seed(0)
    model = LPIPS()
    with torch.no_grad():
        for lin in model.lin:
            lin.weight.fill_(1.0 / lin.weight.shape[1])
    return model.eval().requires_grad_(False)


class CheapPerceptual(torch.nn.Module):
    """A fast stand-in for LPIPS in tests of the bookkeeping: L1 distance of 2x-pooled images, [N]."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (torch.nn.functional.avg_pool2d(x, 2) - torch.nn.functional.avg_pool2d(y, 2)).abs().mean(dim=(1, 2, 3))


@pytest.fixture
def cheap() -> CheapPerceptual:
    return CheapPerceptual()


def _cfg(**kw) -> invert.InvertConfig:
    base = dict(steps=12, lr=0.05, loss_size=32, checkpoint_every=0)
    base.update(kw)
    return invert.InvertConfig(**base)


def _target(G, seed: int, n: int = 1) -> torch.Tensor:
    """G's image [n, 3, R, R] for z drawn on the CPU (same z on every device), on G's device."""
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(G.w_avg.device)
    with torch.no_grad():
        w = G.mapping(z)
        return G.synthesis(w[:, None].repeat(1, G.num_ws, 1)).clamp(-1, 1)


def test_lr_schedule_ramps():
    cfg = invert.InvertConfig(steps=100, lr=0.1)
    lrs = [cfg.lr_at(s) for s in range(100)]
    assert lrs[0] < lrs[10] == pytest.approx(0.1) and lrs[-1] < 0.01
    assert max(lrs) <= 0.1 + 1e-12


def test_optimisation_reduces_the_loss(tiny_stylegan2, small_lpips):
    G = tiny_stylegan2
    target = _target(G, 1)
    seen = []
    state, losses = invert.optimize(G, target, _cfg(steps=15), small_lpips, on_step=lambda s, l: seen.append(l["total"].item()))
    assert len(seen) == 15
    assert losses["total"][0] < 0.6 * seen[0]
    assert state.ws.shape == (1, G.num_ws, G.w_dim)
    assert set(losses) == {"total", "lpips", "mse", "w_reg", "noise_reg"}
    assert state.noise  # StyleGAN2 noise maps were optimised and kept normalised
    for v in state.noise.values():
        assert abs(v.mean().item()) < 1e-4 and abs(v.pow(2).mean().sqrt().item() - 1) < 1e-3


def test_same_seed_same_result_and_batch_equals_singles(tiny_stylegan2, cheap):
    G = tiny_stylegan2
    targets = _target(G, 2, n=2)
    a, _ = invert.optimize(G, targets, _cfg(), cheap)
    b, _ = invert.optimize(G, targets, _cfg(), cheap)
    assert torch.equal(a.ws, b.ws)
    single, _ = invert.optimize(G, targets[1:], _cfg(), cheap)
    assert torch.allclose(a.ws[1], single.ws[0], atol=1e-4)


def test_resume_from_checkpoint_matches_uninterrupted(tiny_stylegan2, cheap):
    G = tiny_stylegan2
    target = _target(G, 3)
    full, _ = invert.optimize(G, target, _cfg(), cheap)
    saved = []
    invert.optimize(G, target, _cfg(checkpoint_every=5), cheap, on_checkpoint=saved.append)
    assert [s.step for s in saved] == [5, 10]
    # round-trip the step-5 state through the per-image split used for checkpoint files
    restored = invert.InversionState.stack(saved[0].split(), "cpu")
    resumed, _ = invert.optimize(G, target, _cfg(), cheap, state=restored)
    assert torch.allclose(resumed.ws, full.ws, atol=1e-5)


def test_no_noise_optimisation_when_disabled(tiny_stylegan2, cheap):
    state, losses = invert.optimize(tiny_stylegan2, _target(tiny_stylegan2, 4), _cfg(steps=3, optimize_noise=False), cheap)
    assert state.noise == {} and losses["noise_reg"][0] == 0


def test_sharding(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert invert.shard_info() == (0, 1, 0)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert invert.shard_info() == (1, 3, 1)
    parts = [invert.shard(range(10), r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(10)) and parts[1] == [1, 4, 7]


@pytest.fixture
def photos(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(skimage_data.astronaut()).save(folder / "astro.png")
    Image.fromarray(np.full((120, 120, 3), 80, np.uint8)).save(folder / "blank.png")
    (folder / "notes.jpg").write_text("not an image")
    return folder


def test_invert_files_outputs_errors_and_resume(tiny_stylegan2, cheap, photos, tmp_path):
    from tests.helpers import require_asset

    require_asset("dlib-landmarks-68")
    out = tmp_path / "out"
    cfg = _cfg(steps=6, checkpoint_every=2)
    results = invert.invert_files(tiny_stylegan2, sorted(photos.iterdir()), out, cfg, lpips_model=cheap, progress=False, log=lambda m: None)
    status = {r.source.split("/")[-1]: r.status for r in results}
    assert status == {"astro.png": "done", "blank.png": "error", "notes.jpg": "error"}
    assert sorted(p.name for p in out.iterdir()) == ["astro.pt", "astro_recon.png", "grid.png"]
    grid = np.asarray(Image.open(out / "grid.png").convert("RGB"))
    left, top = media.label_width(256), media.header_height(256)
    assert grid.shape == (top + 260 + 4, left + 3 * 260 + 4, 3)  # one face: photo | aligned | reconstruction
    assert (grid[:top, left:] < 100).any() and (grid[top:, :left] < 100).any()  # column labels and the stem
    rec = invert.load_latent(out / "astro.pt")
    assert rec["ws"].shape == (tiny_stylegan2.num_ws, tiny_stylegan2.w_dim) and rec["ws"].dtype == torch.float32
    assert rec["generator"] == tiny_stylegan2.name and len(rec["source_sha256"]) == 64
    assert rec["transform"]["output_size"] == tiny_stylegan2.resolution and rec["steps"] == 6
    # the stored latent (with its noise maps) re-renders the saved reconstruction
    img = invert.render_latent(tiny_stylegan2, rec)
    saved = np.asarray(Image.open(out / "astro_recon.png"))
    again = ((img[0].clamp(-1, 1).permute(1, 2, 0).numpy() + 1) * 127.5).round()
    assert np.abs(again - saved).max() <= 1
    # rerun: skipped, nothing rewritten
    mtime = (out / "astro.pt").stat().st_mtime_ns
    again_results = invert.invert_files(tiny_stylegan2, [photos / "astro.png"], out, cfg, lpips_model=cheap, progress=False)
    assert again_results[0].status == "skipped" and (out / "astro.pt").stat().st_mtime_ns == mtime
    # a reused latent reports the optimisation time and losses it was made with
    assert rec["seconds"] > 0 and again_results[0].seconds == rec["seconds"] and again_results[0].losses == rec["losses"]
    # other settings: the old latent is neither reused nor replaced, unless asked (--overwrite)
    longer = invert.invert_files(tiny_stylegan2, [photos / "astro.png"], out, _cfg(steps=7, checkpoint_every=2),
                                 lpips_model=cheap, progress=False, log=lambda m: None)
    assert longer[0].status == "error" and "other settings (6 steps" in longer[0].message
    assert (out / "astro.pt").stat().st_mtime_ns == mtime
    longer = invert.invert_files(tiny_stylegan2, [photos / "astro.png"], out, _cfg(steps=7, checkpoint_every=2),
                                 lpips_model=cheap, progress=False, log=lambda m: None, overwrite=True)
    assert longer[0].status == "done" and invert.load_latent(out / "astro.pt")["steps"] == 7


def test_invert_files_resumes_a_checkpoint(tiny_stylegan2, cheap, photos, tmp_path):
    from tests.helpers import require_asset

    require_asset("dlib-landmarks-68")
    cfg = _cfg(steps=8, checkpoint_every=4)
    full = tmp_path / "full"
    invert.invert_files(tiny_stylegan2, [photos / "astro.png"], full, cfg, lpips_model=cheap, progress=False)
    # an interrupted run leaves its step-4 checkpoint: make one by stopping there
    part = tmp_path / "part"
    job = invert.prepare_jobs(photos / "astro.png", tiny_stylegan2.resolution)[0]
    target = invert.prepare_targets([job.image], cfg.loss_size, "cpu")
    saved = []
    invert.optimize(tiny_stylegan2, target, cfg, cheap, on_checkpoint=saved.append)
    part.mkdir()
    (item,) = saved[0].split()
    invert.save_latent(part / "astro.ckpt.pt", {"format": invert.CHECKPOINT_FORMAT, "schedule": cfg.schedule_key(),
                                                "generator": tiny_stylegan2.name, "source_sha256": job.source_sha256,
                                                "face_index": 0, "seconds": 100.0, **item})
    res = invert.invert_files(tiny_stylegan2, [photos / "astro.png"], part, cfg, lpips_model=cheap, progress=False)
    assert res[0].status == "done" and not (part / "astro.ckpt.pt").exists()
    a, b = invert.load_latent(full / "astro.pt"), invert.load_latent(part / "astro.pt")
    assert torch.allclose(a["ws"], b["ws"], atol=1e-5)
    # the time spent before the interruption counts towards the image's seconds
    assert b["seconds"] > 100.0 and res[0].seconds == b["seconds"]


def test_load_latent_rejects_other_files(tmp_path):
    from stylerig_au.errors import StylerigError

    bad = tmp_path / "x.pt"
    torch.save({"ws": torch.zeros(2, 2)}, bad)
    with pytest.raises(StylerigError, match="not a stylerig-au latent"):
        invert.load_latent(bad)
    with pytest.raises(StylerigError, match="no such"):
        invert.load_latent(tmp_path / "missing.pt")


def test_cli_invert(tiny_stylegan2, photos, tmp_path, capsys):
    from stylerig_au.models.checkpoints import save_stylegan2
    from tests.helpers import require_asset

    require_asset("dlib-landmarks-68")
    require_asset("lpips-vgg16")
    ckpt = save_stylegan2(tiny_stylegan2, tmp_path / "tiny.pt")
    out = tmp_path / "out"
    rc = main(["invert", str(photos), "--out", str(out), "--steps", "2", "--generator", str(ckpt), "--loss-size", "32"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "blank.png" in captured.err and "notes.jpg" in captured.err
    assert {"astro.pt", "astro_recon.png", "grid.png"} <= {p.name for p in out.iterdir()}
    assert "astro: lpips" in captured.out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_optimize_on_gpu_matches_cpu_start(tiny_stylegan2, small_lpips):
    G = tiny_stylegan2.to("cuda")
    target = _target(G, 5)
    state, losses = invert.optimize(G, target, _cfg(steps=10), small_lpips.to("cuda"))
    assert state.ws.device.type == "cuda" and np.isfinite(losses["total"]).all()
    start = invert.initial_state(G, 1, True, 0, "cuda")
    with torch.no_grad():
        first = small_lpips(invert.render(G, start.ws, start.noise), target)
    assert losses["lpips"][0] < first.item()


def test_eval_inversion_script_resumes_from_kept_latents(tiny_stylegan2, photos, tmp_path, capsys):
    """experiments/eval_inversion.py --keep DIR --resume: a rerun reuses finished latents and their seconds."""
    import json

    from stylerig_au.models.checkpoints import save_stylegan2
    from tests.helpers import require_asset
    from tests.test_eval_edits_stats import load_script

    for name in ("dlib-landmarks-68", "lpips-vgg16", "dlib-face-recognition", "sface"):
        require_asset(name)
    script = load_script("eval_inversion")
    ckpt = save_stylegan2(tiny_stylegan2, tmp_path / "tiny.pt")
    faces = tmp_path / "faces"
    faces.mkdir()
    (photos / "astro.png").rename(faces / "astro.png")
    keep, out = tmp_path / "keep", tmp_path / "eval.json"
    args = ["--faces", str(faces), "--generator", str(ckpt), "--steps", "2", "--keep", str(keep), "--out", str(out)]
    assert script.main(args[:-4] + ["--out", str(out), "--resume"]) == 2  # --resume without --keep
    assert "needs --keep" in capsys.readouterr().err and not out.exists()
    assert script.main(args + ["--resume"]) == 0
    first = json.loads(out.read_text())
    assert first["settings"]["resumed"] and first["per_image"][0]["seconds"] > 0
    mtime = (keep / "astro.pt").stat().st_mtime_ns
    assert script.main(args + ["--resume"]) == 0
    assert "reused the finished latent" in capsys.readouterr().err
    second = json.loads(out.read_text())
    assert (keep / "astro.pt").stat().st_mtime_ns == mtime
    a, b = first["per_image"][0], second["per_image"][0]
    for key in ("lpips", "mse", "ssim", "identity_distance", "identity_sface", "seconds"):  # identity: NaN when dlib finds no face
        assert a[key] == b[key] or (np.isnan(a[key]) and np.isnan(b[key])), key
