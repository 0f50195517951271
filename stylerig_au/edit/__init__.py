"""AU editing: composable edit objects, linear AU directions, and the :class:`Editor` facade.

- :mod:`~stylerig_au.edit.spec`: ``AU``, ``Edit``, ``only_layers``, ``presets`` (what to change).
- :mod:`~stylerig_au.edit.directions`: ``LinearDirections`` and ``conditional`` (how, linearly in W+).
- :mod:`~stylerig_au.edit.editor`: ``Editor`` (latents or latent files in, edited latents/images out).
"""

from stylerig_au.edit.directions import LinearDirections, conditional
from stylerig_au.edit.editor import Editor
from stylerig_au.edit.spec import AU, Edit, Term, only_layers, presets

__all__ = ["AU", "Edit", "Editor", "LinearDirections", "Term", "conditional", "only_layers", "presets"]
