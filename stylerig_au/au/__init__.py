"""Facial Action Units: the vocabulary, the OpenFace 2.2 estimator of our own, and AU detection.

Modules (imported on use so that ``stylerig_au.au.vocab`` stays light):

- :mod:`~stylerig_au.au.vocab`: AU numbers, FACS names, regions, combinations, ``parse_au_spec``.
- :mod:`~stylerig_au.au.openface`: ``OpenFaceAU``, OpenFace 2.2's static AU intensities in PyTorch.
- :mod:`~stylerig_au.au.fhog`, :mod:`~stylerig_au.au.pdm`: its FHOG features and 3-D shape-model fit.
- :mod:`~stylerig_au.au.openface_model`: converter and loader of the OpenFace model files.
- :mod:`~stylerig_au.au.landmarks`: dlib 68-point landmarks.
- :mod:`~stylerig_au.au.detect`: photos -> AU intensities per face (behind ``stylerig-au detect``).
- :mod:`~stylerig_au.au.student`: ``StudentAU``, a small differentiable CNN distilled from OpenFace
  (aligned faces -> 17 intensities); :mod:`~stylerig_au.au.student_train` trains it (``train-detector``).
- :mod:`~stylerig_au.au.oracle`: pyfaceau as an independent reference (tests and evaluation only).
"""
