"""AU editing: composable edit objects, linear AU directions, and the :class:`Editor` facade.

- :mod:`~stylerig_au.edit.spec`: ``AU``, ``Edit``, ``only_layers``, ``presets`` (what to change).
- :mod:`~stylerig_au.edit.directions`: ``LinearDirections`` and ``conditional`` (how, linearly in W+).
- :mod:`~stylerig_au.edit.editor`: ``Editor`` (latents or latent files in, edited latents/images out).
"""

from stylerig_au.edit.directions import LinearDirections, conditional
from stylerig_au.edit.editor import Editor
from stylerig_au.edit.mapper import AUMapper, load_default_mapper, load_mapper
from stylerig_au.edit.spec import AU, Edit, Term, only_layers, presets

__all__ = ["AU", "AUMapper", "Edit", "Editor", "LinearDirections", "load_default_mapper", "load_mapper", "Term", "conditional", "only_layers", "presets"]
