"""Where avsc finds ffmpeg.

The ffmpeg binary comes from the ``imageio-ffmpeg`` wheel, so ``pip install avsc`` is
enough; ``AVSC_FFMPEG`` (read when called, not at import) points to another binary.
"""

from __future__ import annotations

import os
import shutil

from avsc.errors import AvscError


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary to use."""
    override = os.environ.get("AVSC_FFMPEG")
    if override:
        return override
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        found = shutil.which("ffmpeg")
        if found:
            return found
        raise AvscError("no ffmpeg binary found: `pip install imageio-ffmpeg` or set AVSC_FFMPEG") from None
