"""AU intensities of the faces in photos: landmarks, then an AU detector (library side of ``stylerig-au detect``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from stylerig_au.errors import StylerigError

DETECTORS = ("openface", "student")


@dataclass
class FaceAUs:
    """AU intensities of one face.

    Attributes:
        source: the photo's path (or '<array>').
        face: index of the face in the photo, left to right.
        intensities: AU number -> intensity on 0–5.
        landmarks: float64 [68, 2] dlib landmarks used.
    """

    source: str
    face: int
    intensities: dict[int, float]
    landmarks: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return {"photo": self.source, "face": self.face, "aus": {f"AU{n:02d}": round(v, 4) for n, v in self.intensities.items()}}


def make_detector(name: str = "openface", model: str | os.PathLike | None = None, accept_license: bool = False):
    """The AU estimator called ``name``.

    Args:
        name: 'openface' (OpenFace 2.2 static SVRs on dlib landmarks) or 'student' (the distilled CNN,
            :class:`~stylerig_au.au.student.StudentAU`; it aligns each face itself from the landmarks).
        model: the converted model file (default: the registry's).
        accept_license: accept OpenFace's non-commercial licence for a fetch ('openface' only).
    Returns:
        An object with ``aus`` (AU numbers) and ``predict_photos(photos, landmarks) -> float32 [N, 17]``.
    """
    if name == "openface":
        from stylerig_au.au import openface_model
        from stylerig_au.au.openface import OpenFaceAU

        return OpenFaceAU(openface_model.load(model, accept_license=accept_license))
    if name == "student":
        from stylerig_au.au.student import load_student

        return load_student(model)
    raise StylerigError(f"unknown detector '{name}'; choose one of: {', '.join(DETECTORS)}")


def detect_aus(
    photos: Sequence[str | os.PathLike | np.ndarray],
    detector=None,
    all_faces: bool = False,
    predictor: str | os.PathLike | None = None,
    upsample: int = 1,
    detect_max_side: int | None = None,
) -> list[FaceAUs]:
    """AU intensities of the best face (or every face) in each photo.

    Args:
        photos: image paths or uint8 RGB arrays [H, W, 3].
        detector: an estimator with ``aus`` and ``predict_photos`` (default: OpenFace from the registry).
        all_faces: every face found, not only the highest-scoring one.
        predictor: dlib 68-landmark model path (default: the registry's).
        upsample: dlib detector upsampling.
        detect_max_side: find faces on a copy at most this large (faster; None: full size).

    Raises:
        StylerigError: a photo cannot be read or has no face.
    """
    from stylerig_au.au.landmarks import all_landmarks_68, landmarks_68
    from stylerig_au.imageio import load_image

    detector = detector if detector is not None else make_detector()
    images, marks, meta = [], [], []
    for photo in photos:
        source = "<array>" if isinstance(photo, np.ndarray) else str(photo)
        image = photo if isinstance(photo, np.ndarray) else load_image(Path(photo))
        if all_faces:
            found = all_landmarks_68(image, predictor, upsample, detect_max_side)
        else:
            found = [lm for lm in [landmarks_68(image, predictor, upsample, detect_max_side)] if lm is not None]
        if not found:
            from stylerig_au.align import no_face_hint

            raise StylerigError(f"{source}: no face found; {no_face_hint(upsample, (image.shape[1], image.shape[0]))}")
        for k, lm in enumerate(found):
            images.append(image)
            marks.append(lm)
            meta.append((source, k))
    values = detector.predict_photos(images, marks) if images else np.zeros((0, len(detector.aus)))
    return [FaceAUs(src, k, {au: float(v) for au, v in zip(detector.aus, row)}, lm) for (src, k), row, lm in zip(meta, values, marks)]
