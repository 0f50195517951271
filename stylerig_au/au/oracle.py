"""An independent reference for the OpenFace estimator: PyPI ``pyfaceau`` fed with our dlib landmarks.

Only for tests and evaluation. ``pyfaceau==1.4.1`` re-implements OpenFace 2.2 in numpy/OpenCV
(PDM fit, alignment, triangulation mask) with dlib's own FHOG through ``pyfhog``. Its landmark
fitter needs models we cannot reach, so we hand it the same dlib landmarks our estimator uses and
call only its per-step functions. Optional dependencies (dev only): ``pyfaceau`` (installed
``--no-deps``), ``pyfhog``, ``opencv-python-headless<5``, ``numba``.
"""

from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path

import numpy as np

from stylerig_au.au.openface_model import PDM_FILE, STATIC_SVR_FILES, TRIS_FILE
from stylerig_au.errors import StylerigError


def available() -> bool:
    """True when pyfaceau and the parts of it we call can be imported."""
    try:
        _modules()
    except StylerigError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _modules():
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import pyfhog
            from pyfaceau.alignment.calc_params import CalcParams
            from pyfaceau.alignment.face_aligner import OpenFace22FaceAligner
            from pyfaceau.features.pdm import PDMParser
            from pyfaceau.features.triangulation import TriangulationParser
            from pyfaceau.prediction.model_parser import OF22ModelParser
    except ImportError as err:
        raise StylerigError(f"the pyfaceau oracle needs pyfaceau==1.4.1, pyfhog, opencv-python-headless<5 and numba ({err})") from None
    return pyfhog, CalcParams, OpenFace22FaceAligner, PDMParser, TriangulationParser, OF22ModelParser


class PyFaceAUOracle:
    """pyfaceau's OpenFace 2.2 static pipeline on given landmarks.

    Args:
        au_predictors: the raw OpenFace ``AU_predictors`` folder.
    """

    def __init__(self, au_predictors: str | Path) -> None:
        pyfhog, CalcParams, Aligner, PDMParser, Tris, Parser = _modules()
        folder = Path(au_predictors)
        with contextlib.redirect_stdout(io.StringIO()):
            self.pdm = PDMParser(str(folder / PDM_FILE))
            self.calc = CalcParams(self.pdm)
            self.aligner = Aligner(str(folder / PDM_FILE), sim_scale=0.7, output_size=(112, 112))
            self.tris = Tris(str(folder / TRIS_FILE))
            parser = Parser(str(folder))
            self.models = [parser.parse_svr_model(folder / f, is_dynamic=False) for f in STATIC_SVR_FILES.values()]
        self.aus = list(STATIC_SVR_FILES)
        self._fhog = pyfhog.extract_fhog_features

    def features(self, photo_rgb: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(float64 [4702] features, uint8 [112, 112, 3] BGR aligned face) for one photo."""
        lm = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
        with contextlib.redirect_stdout(io.StringIO()):
            glob, local = self.calc.calc_params(lm)
            bgr = np.ascontiguousarray(photo_rgb[..., 2::-1])
            face = self.aligner.align_face(bgr, lm, float(glob[4]), float(glob[5]), float(glob[3]), apply_mask=True, triangulation=self.tris)
        hog = self._fhog(np.ascontiguousarray(face), cell_size=8)
        geom = self.pdm.extract_geometric_features(np.asarray(local, dtype=np.float64))
        return np.concatenate([hog, geom]).astype(np.float64), face

    def predict(self, photo_rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """float64 [17] static AU intensities (0–5), AUs in :data:`STATIC_SVR_FILES` order."""
        x, _ = self.features(photo_rgb, landmarks)
        out = [(x - m["means"].reshape(-1)) @ m["support_vectors"].reshape(-1) + m["bias"] for m in self.models]
        return np.clip(np.array(out), 0.0, 5.0)
