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


# ffmpeg's http protocol: reconnect on dropped connections and network errors, and give up
# on a silent server after rw_timeout (microseconds) instead of hanging.
_URL_OPTIONS = {"reconnect": "1", "reconnect_on_network_error": "1", "reconnect_delay_max": "10",
                "rw_timeout": "60000000"}


def ffmpeg_source(path: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """What ffmpeg's ``-i`` reads for a media location, and the input options it needs.

    A local path is returned as is. An ``s3://`` URI becomes a presigned HTTPS URL
    (:func:`avsc.storage.locations.ffmpeg_input`): ffmpeg reads the object with range
    requests, decoding it straight from the store without a copy on disk. The URL carries a
    signature: messages must name the ``s3://`` location (see :func:`redact`), never the URL.
    """
    from avsc.storage.s3 import is_remote

    text = str(path)
    if not is_remote(text):
        return text, {}
    from avsc.storage.locations import ffmpeg_input

    return ffmpeg_input(text), dict(_URL_OPTIONS)


def redact(report: str, source: str, name: str | os.PathLike) -> str:
    """``report`` (ffmpeg's stderr) with the presigned URL ``source`` replaced by ``name``."""
    import re

    if source == str(name):
        return report
    report = report.replace(source, str(name)).replace(source.split("?", 1)[0], str(name))
    return re.sub(r"X-Amz-[A-Za-z-]+=[^&\s\"']+", "X-Amz-…", report)
