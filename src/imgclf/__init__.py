"""imgclf: a folder of labelled images in; a trained, evaluated, honestly compared classifier out.

The CLI is a thin shell over these functions; each stage lives in its own module.
"""

__version__ = "0.1.0"

from .errors import DecodeError, Diverged, ImgclfError  # noqa: E402
