"""stylerig_au: edit the facial Action Units of real photos in a StyleGAN's W+ space.

Importing the package is cheap: it compiles nothing and loads no weights.
"""

__version__ = "0.1.0"

from stylerig_au.errors import StylerigError

__all__ = ["StylerigError", "__version__"]
