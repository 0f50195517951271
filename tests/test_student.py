"""The student AU detector: network shapes and gradients, files, training (resume, settings), the CLI.

Fast tests use tiny random networks and tiny fake datasets in the AU-samples format; the slow test
loads the committed student and checks a smiling face.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stylerig_au.au.detect import make_detector
from stylerig_au.au.student import StudentAU, StudentAUNet, StudentConfig, load_student, save_student
from stylerig_au.au.student_train import TrainSettings, agreement, augment, distill_loss, split_by_seed, train_student
from stylerig_au.au.vocab import AU_NUMBERS
from stylerig_au.cli import main
from stylerig_au.errors import StylerigError
from stylerig_au.samples import FORMAT, FORMAT_VERSION, load_samples

TINY = dict(input_size=32, channels=(4, 8, 8), head=8)


def tiny_net(seed: int = 0) -> StudentAUNet:
    torch.manual_seed(seed)
    return StudentAUNet(StudentConfig(aus=AU_NUMBERS, **TINY)).eval()


def fake_landmarks(cx: float = 50.0, cy: float = 50.0, eye: float = 10.0) -> np.ndarray:
    """68 dlib-style points of an upright face: only the eyes and mouth corners matter for the FFHQ crop."""
    lm = np.full((68, 2), (cx, cy), np.float64)
    lm[36:42] = (cx - eye, cy - eye)
    lm[42:48] = (cx + eye, cy - eye)
    lm[48] = (cx - eye, cy + eye)
    lm[54] = (cx + eye, cy + eye)
    return lm


def write_fake_dataset(folder, n: int = 40, chunk: int = 16, side: int = 64, seed: int = 0) -> None:
    """A dataset in the AU-samples format: random images whose mean brightness drives every label."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "generator": "fake", "psi": 0.8, "seed_start": 0,
            "chunk_size": chunk, "image_size": side, "aus": list(AU_NUMBERS), "detector": "fake", "pose": "pitch, yaw, roll (radians)"}
    (folder / "meta.json").write_text(json.dumps(meta))
    for i, start in enumerate(range(0, n, chunk)):
        k = min(chunk, n - start)
        level = rng.uniform(0, 1, k)
        images = (rng.uniform(0, 80, (k, 3, side, side)) + 170 * level[:, None, None, None]).astype(np.uint8)
        aus = np.clip(level[:, None] * 3 + rng.normal(0, 0.1, (k, 17)), 0, 5).astype(np.float32)
        found = np.ones(k, bool)
        found[0] = i > 0  # one face without labels
        aus[~found] = np.nan
        torch.save({"seeds": torch.arange(start, start + k), "w": torch.zeros(k, 4), "aus": torch.from_numpy(aus),
                    "pose": torch.zeros(k, 3), "landmarks": torch.zeros(k, 68, 2), "face_found": torch.from_numpy(found),
                    "images": torch.from_numpy(images)}, folder / f"chunk_{i:05d}.pt")


# ----------------------------------------------------------------------------- the network


def test_student_outputs_follow_the_vocabulary_order():
    assert list(AU_NUMBERS) == [1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45]
    assert tiny_net().aus == list(AU_NUMBERS)


@pytest.mark.slow
def test_vocabulary_order_is_the_openface_estimators():
    from tests.helpers import require_asset

    require_asset("openface-2.2-au")
    assert make_detector("openface").aus == list(AU_NUMBERS)


@pytest.mark.parametrize("side", [64, 100, 256])
def test_any_square_side_gives_17_values(side):
    out = tiny_net()(torch.rand(2, 3, side, side) * 2 - 1)
    assert out.shape == (2, 17) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_clip_keeps_the_openface_range():
    net = tiny_net()
    with torch.no_grad():
        net.head[-1].bias.fill_(-3.0)
        net.head[-1].bias[0] = 9.0
    out = net(torch.zeros(1, 3, 64, 64), clip=True)
    assert out.min() >= 0 and out.max() <= 5 and out[0, 0] == 5


def test_gradients_reach_the_input_pixels():
    x = (torch.rand(2, 3, 128, 128) * 2 - 1).requires_grad_(True)
    tiny_net()(x)[:, 8].sum().backward()
    face = x.grad[:, :, 40:110, 30:100]
    assert torch.isfinite(x.grad).all() and face.abs().sum() > 0


@pytest.mark.parametrize("shape", [(1, 3, 64, 32), (1, 1, 64, 64), (1, 3, 32, 32)])
def test_bad_input_shapes_are_user_errors(shape):
    with pytest.raises(StylerigError, match="student AU detector needs"):
        tiny_net()(torch.zeros(shape))


def test_predict_aligned_and_photos_agree():
    student = StudentAU(tiny_net())
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)
    from stylerig_au.align import crop_ffhq

    aligned, _ = crop_ffhq(photo, fake_landmarks(), 256)
    by_photo = student.predict_photos([photo, photo], [fake_landmarks()] * 2)
    by_crop = student.predict_aligned(aligned[None])
    torch_in = student.predict_aligned(torch.from_numpy(aligned.copy()).permute(2, 0, 1)[None])
    assert by_photo.shape == (2, 17) and by_photo.dtype == np.float32
    np.testing.assert_allclose(by_photo[0], by_crop[0], atol=1e-5)
    np.testing.assert_allclose(torch_in, by_crop, atol=1e-6)
    assert student.predict_photos([], []).shape == (0, 17)
    with pytest.raises(StylerigError, match="1 photos but 2 landmark sets"):
        student.predict_photos([photo], [fake_landmarks()] * 2)


# ----------------------------------------------------------------------------- files


def test_save_load_roundtrip_and_make_detector(tmp_path):
    net = tiny_net()
    file = save_student(net, tmp_path / "s.pt", {"note": "test"})
    loaded = make_detector("student", model=file)
    assert isinstance(loaded, StudentAU) and loaded.aus == list(AU_NUMBERS) and loaded.info == {"note": "test"}
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ref = net(x)
    torch.testing.assert_close(loaded(x), ref, atol=2e-2, rtol=2e-2)  # weights are stored as float16
    assert load_student(file).net.training is False


def _one_line_error(file) -> str:
    with pytest.raises(StylerigError) as info:
        load_student(file)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_student_files_are_one_line_errors(tmp_path):
    assert "does not exist" in _one_line_error(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    assert "not a stylerig-au student AU detector file" in _one_line_error(garbage)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    assert "train-detector" in _one_line_error(other)
    broken = tmp_path / "broken.pt"
    save_student(tiny_net(), broken)
    record = torch.load(broken, weights_only=True)
    record["state_dict"].pop("head.4.weight")
    torch.save(record, broken)
    assert "damaged student AU detector file" in _one_line_error(broken)


def test_cli_detect_with_a_missing_student_is_one_error_line(capsys, tmp_path):
    from PIL import Image

    photo = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(photo)
    assert main(["detect", "--detector", "student", "--model", str(tmp_path / "none.pt"), str(photo)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: student-au-detector: file") and "does not exist" in err[0]


# ----------------------------------------------------------------------------- training


def test_split_by_seed_holds_out_the_last_seeds():
    train, held = split_by_seed(torch.tensor([5, 0, 9, 3, 7, 1, 8, 2, 6, 4]), 0.2)
    assert held.sum() == 2 and set(torch.tensor([5, 0, 9, 3, 7, 1, 8, 2, 6, 4])[held].tolist()) == {8, 9}
    assert (train ^ held).all()
    with pytest.raises(StylerigError):
        split_by_seed(torch.arange(3), 1.0)


def test_split_by_seed_keeps_rows_of_a_seed_together_and_splits_each_group():
    seeds = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 100, 101, 102, 103, 104])
    groups = torch.tensor([1] * 10 + [0] * 5)
    train, held = split_by_seed(seeds, 0.2, groups)
    assert seeds[held].tolist() == [4, 4, 104]
    assert seeds[split_by_seed(seeds, 0.2)[1]].tolist() == [103, 104]  # one group: the last 20 % of 10 distinct seeds
    assert (train ^ held).all()


def test_augment_keeps_shape_range_and_is_seeded():
    x = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == torch.float32 and a.min() >= -1 and a.max() <= 1
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, augment(x, torch.Generator().manual_seed(2)))


def test_distill_loss_is_censored_at_the_clip_points():
    w = torch.ones(2)
    assert distill_loss(torch.tensor([[-1.0, 6.0]]), torch.tensor([[0.0, 5.0]]), w) == 0
    assert distill_loss(torch.tensor([[-1.0, 4.0]]), torch.tensor([[1.0, 5.0]]), w) > 0


def test_agreement_numbers():
    t = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    p = np.array([[0.5, 1.0], [1.0, 1.2], [2.5, 1.1]])
    res = agreement(p, t, [1, 2])
    assert res["varying_aus"] == ["AU01"] and res["mean_r"] == pytest.approx(res["per_au"]["AU01"]["r"])
    assert res["per_au"]["AU01"]["mae"] == pytest.approx(1 / 3) and res["n"] == 3


def _train(data, out, epochs=2, log=print, **kw):
    s = load_samples(data, with_images=True).valid()
    settings = TrainSettings(epochs=epochs, batch=8, lr=3e-3, num_samples=len(s), input_size=32, **kw)
    return train_student(s.images, s.aus, s.seeds, list(AU_NUMBERS), out, settings, out.with_suffix(".ckpt"),
                         progress=False, log=log)


def test_training_learns_writes_a_loadable_student_and_resumes_identically(tmp_path):
    torch.set_num_threads(1)
    data = tmp_path / "data"
    write_fake_dataset(data, n=48)
    info = _train(data, tmp_path / "a.pt", epochs=3)
    assert info["train_faces"] + info["heldout_faces"] == 47 and len(info["history"]) == 3
    assert info["heldout_seeds"][1] == 47
    student = load_student(tmp_path / "a.pt")
    assert student.info["heldout"]["n"] == info["heldout_faces"]

    class Stop(Exception):
        pass

    def stop_after_first_epoch(message: str) -> None:
        if message.startswith("epoch 1/"):
            raise Stop

    with pytest.raises(Stop):
        _train(data, tmp_path / "b.pt", epochs=3, log=stop_after_first_epoch)
    assert not (tmp_path / "b.pt").exists() and (tmp_path / "b.ckpt").is_file()
    messages: list[str] = []
    _train(data, tmp_path / "b.pt", epochs=3, log=messages.append)
    assert messages[0].startswith("resuming") and "after epoch 1/3" in messages[0]
    a, b = torch.load(tmp_path / "a.pt", weights_only=True), torch.load(tmp_path / "b.pt", weights_only=True)
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], msg=key)
    with pytest.raises(StylerigError, match="other settings.*seed=0"):
        _train(data, tmp_path / "b.pt", epochs=3, seed=1)


def write_fake_edited_dataset(folder, n_seeds: int = 20, side: int = 64) -> None:
    """An edited-sample dataset: two rows per seed (face, edit), labels driven by brightness as above."""
    write_fake_dataset(folder, n=2 * n_seeds, chunk=2 * n_seeds, side=side, seed=1)
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(seed_start=6_000_000, chunk_size=n_seeds, edits={"mapper": "fake"})
    (folder / "meta.json").write_text(json.dumps(meta))
    chunk = torch.load(folder / "chunk_00000.pt", weights_only=True)
    chunk["seeds"] = torch.arange(6_000_000, 6_000_000 + n_seeds).repeat_interleave(2)
    chunk["face_found"][:] = True
    chunk["aus"] = torch.nan_to_num(chunk["aus"], 1.0)
    chunk["edited"] = torch.tensor([False, True] * n_seeds)
    chunk["delta"] = torch.zeros(2 * n_seeds, 17)
    chunk["delta"][1::2, 3] = 2.0
    torch.save(chunk, folder / "chunk_00000.pt")


def test_fine_tuning_starts_from_the_given_student_and_keeps_its_normalisation(tmp_path):
    torch.set_num_threads(1)
    data = tmp_path / "data"
    write_fake_dataset(data, n=40)
    _train(data, tmp_path / "a.pt", epochs=1)
    start = load_student(tmp_path / "a.pt").net
    s = load_samples(data, with_images=True).valid()
    settings = TrainSettings(epochs=1, batch=8, lr=1e-9, num_samples=len(s), input_size=32, init="a.pt")
    info = train_student(s.images, s.aus, s.seeds, list(AU_NUMBERS), tmp_path / "b.pt", settings, tmp_path / "b.ckpt",
                         progress=False, log=lambda m: None, init_net=start)
    tuned = load_student(tmp_path / "b.pt").net
    for key, value in start.state_dict().items():
        if value.is_floating_point() and "running" not in key:  # BatchNorm statistics move in train mode
            torch.testing.assert_close(tuned.state_dict()[key], value, atol=2e-3, rtol=1e-3, msg=key)
    assert info["settings"]["init"] == "a.pt"
    with pytest.raises(StylerigError, match="both the student to start from and its name"):
        train_student(s.images, s.aus, s.seeds, list(AU_NUMBERS), tmp_path / "c.pt", settings, tmp_path / "c.ckpt",
                      progress=False, log=lambda m: None)
    wrong = TrainSettings(epochs=1, batch=8, num_samples=len(s), input_size=64, init="a.pt")
    with pytest.raises(StylerigError, match="reads AU .* at 32"):
        train_student(s.images, s.aus, s.seeds, list(AU_NUMBERS), tmp_path / "c.pt", wrong, tmp_path / "c.ckpt",
                      progress=False, log=lambda m: None, init_net=start)


def test_cli_train_detector_on_plain_and_edited_data_from_a_student(capsys, tmp_path):
    torch.set_num_threads(1)
    data, edited = tmp_path / "data", tmp_path / "edited"
    write_fake_dataset(data, n=40)
    write_fake_edited_dataset(edited, n_seeds=20)
    common = ["--epochs", "1", "--batch", "8", "--input-size", "32"]
    assert main(["train-detector", "--data", str(data), "--out", str(tmp_path / "a.pt"), *common]) == 0
    out = tmp_path / "b.pt"
    assert main(["train-detector", "--data", str(data), "--edited", str(edited), "--init", str(tmp_path / "a.pt"),
                 "--out", str(out), "--lr", "3e-4", *common]) == 0
    captured = capsys.readouterr()
    assert f"held-out of {edited} (6 faces)" in captured.out and f"held-out of {data} (6 faces)" in captured.out
    info = load_student(out).info
    assert info["settings"]["init"] == str(tmp_path / "a.pt") and "edited by fake" in info["data"]
    assert info["train_faces"] + info["heldout_faces"] == 39 + 40
    assert info["heldout_by_data"][str(edited)]["seeds"] == [6_000_017, 6_000_019]
    assert main(["train-detector", "--edited", str(edited), "--out", str(tmp_path / "c.pt"), *common]) == 0


@pytest.mark.parametrize("args, message", [
    ([], "give the training data"),
    (["--edited", "E", "--build", "10"], "--build makes plain samples"),
])
def test_cli_train_detector_data_options_are_usage_errors(capsys, tmp_path, args, message):
    assert main(["train-detector", *args, "--out", str(tmp_path / "s.pt")]) == 2
    assert message in capsys.readouterr().err


def test_cli_train_detector(capsys, tmp_path):
    torch.set_num_threads(1)
    data = tmp_path / "data"
    write_fake_dataset(data, n=40)
    out = tmp_path / "student.pt"
    args = ["train-detector", "--data", str(data), "--out", str(out), "--epochs", "1", "--batch", "8", "--input-size", "32"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out and "39 with a labelled face" in captured.err
    assert (tmp_path / "student.train-state.pt").is_file() and load_student(out).aus == list(AU_NUMBERS)
    assert main(args) == 0  # everything done: resumes after the last epoch and rewrites the student
    assert "resuming" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["no-data", "too-few"])
def test_cli_train_detector_user_errors(capsys, tmp_path, case):
    data = tmp_path / "data"
    if case != "no-data":
        write_fake_dataset(data, n=20)
    batch = "64" if case == "too-few" else "8"
    assert main(["train-detector", "--data", str(data), "--out", str(tmp_path / "s.pt"), "--batch", batch]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1
    assert {"no-data": "no AU sample dataset here", "too-few": "only 16 training faces for batches of 64"}[case] in errors[0]


def test_cli_train_detector_out_must_be_a_file(capsys, tmp_path):
    assert main(["train-detector", "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the committed student


@pytest.mark.slow
def test_committed_student_sees_the_astronauts_smile():
    from skimage import data

    from stylerig_au.align import align_image
    from tests.helpers import require_asset

    require_asset("dlib-landmarks-68")
    student = load_student()
    (face,) = align_image(data.astronaut(), output_size=256)
    values = dict(zip(student.aus, student.predict_aligned(face.image[None])[0]))
    assert values[12] > 2.0 and values[6] > 0.8, values
