"""User-facing errors: one line that names the file or option and says what to do.

The CLI prints these without a traceback; anything else escaping is a bug in imgclf.
"""


class ImgclfError(Exception):
    """A problem with the user's input, options or disk that they can act on."""


class DecodeError(ImgclfError):
    """An image file that cannot be turned into RGB pixels; the message is the reason."""


class Diverged(ImgclfError):
    """Training loss became NaN or inf; carries where it happened."""

    def __init__(self, message: str, epoch: int, step: int):
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class Interrupted(ImgclfError):
    """Ctrl-C during a long job, after whatever could be saved was saved."""
