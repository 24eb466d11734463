"""The one way avsc runs ffmpeg: which binary, its environment, and what its failures mean.

The binary comes from the ``imageio-ffmpeg`` wheel, so ``pip install avsc`` is enough;
``AVSC_FFMPEG`` (read when called, not at import) points to another one, e.g. a
distribution's ``/usr/bin/ffmpeg``. Probing (:mod:`avsc.media.probe`), decoding
(:mod:`avsc.media.decode`) and encoding (:mod:`avsc.media.encode`) build their command
lines with ``ffmpeg-python`` (``.get_args()``: everything after the binary) and all run
them through :func:`run_ffmpeg`, which owns the binary, its environment and time limit,
so a failure reads the same wherever it happens:

- a report line that means the file is unusable (:data:`FAILURE_MARKERS`) becomes a
  :class:`avsc.errors.MediaError` naming the file and the problem;
- a process killed by a signal (a crash of the decoder, or the out-of-memory killer)
  becomes an :class:`FFmpegCrash`, which says so and what to do, and is never blamed on
  the file;
- a run past its time limit is stopped and reported.

A file may also be an ``s3://`` object: :func:`run_ffmpeg` hands ffmpeg a presigned HTTPS URL
for it (:func:`avsc.storage.locations.ffmpeg_input`; ffmpeg reads it with range requests and
reconnects after a dropped connection), so media are decoded straight from the store with no
copy on disk; reports and messages name the ``s3://`` URI, never the signed URL.

The wheel's ffmpeg is a static build. Its C library loads the system's character-set
converters (``gconv`` modules) when a demuxer asks for one (the MPEG-TS demuxer does, for
its service names), and a mismatch between the two crashes it with SIGSEGV on every
``.ts``/``.m2ts``/``.mts`` file. :func:`ffmpeg_env` therefore runs the bundled binary
with ``GCONV_PATH`` pointing at no converters: the conversion then fails cleanly and
only the (unused) service name stays undecoded. Another binary runs in the environment
as it is.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from avsc.errors import AvscError, MediaError

log = logging.getLogger(__name__)

HINT = "re-download or re-extract the file, or remove it from the list"

# Report lines that mean the file is unusable, and the problem they state. A marker in
# ALWAYS_FATAL fails the file even when ffmpeg exits with status 0 (it read a part of the
# file and gave up quietly); the others only when ffmpeg failed.
FAILURE_MARKERS: tuple[tuple[str, str], ...] = (
    ("partial file", "file is truncated (ends inside its own data)"),
    ("moov atom not found", "not a complete MP4 (moov atom not found): truncated or not a video"),
    ("Invalid data found when processing input", "not a media file ffmpeg can read"),
    ("Could not find codec parameters", "stream parameters unreadable: corrupt or truncated"),
    ("error reading header", "corrupt header"),
)
ALWAYS_FATAL: frozenset[str] = frozenset({"partial file", "moov atom not found"})

# Decoder messages at ffmpeg's "error" level that clean recordings produce too, when decoding
# starts mid-stream after a seek (H.264 references from before the seek point). Any other
# message at that level while decoding is a decode error (:func:`decode_errors`).
HARMLESS_DECODE_MESSAGES: tuple[str, ...] = (
    "co located POCs unavailable",
    "mmco: unref short failure",
    "number of reference frames",
)

# Signals whose exit statuses a shell wrapper (128 + N) passes on for a killed ffmpeg.
_CRASH_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT, signal.SIGKILL)
_NO_GCONV = "/nonexistent-gconv"  # GCONV_PATH for the static build: no converters at all


class FFmpegCrash(MediaError):
    """ffmpeg was killed by a signal while reading a file: a fault of the binary, not the file.

    Attributes:
        signal_name: e.g. ``SIGSEGV``.
    """

    def __init__(self, path: str | Path, signal_name: str, what: str, exe: str):
        self.signal_name = signal_name
        cause = "out of memory?" if signal_name == "SIGKILL" else "a fault of this ffmpeg build"
        super().__init__(
            path,
            f"ffmpeg crashed ({signal_name}, {cause}) while reading its {what}; "
            f"the file may well be fine (ffmpeg: {exe})",
            "point AVSC_FFMPEG at another ffmpeg build (e.g. a distribution's: "
            "`apt-get install ffmpeg`, then AVSC_FFMPEG=/usr/bin/ffmpeg), or remux the file with "
            "another tool (`ffmpeg -i FILE -c copy FILE.mkv`) and use the copy",
        )


@dataclass(frozen=True)
class FFmpegRun:
    """A finished ffmpeg run: exit status, standard output (raw bytes) and report (stderr)."""

    returncode: int
    stdout: bytes
    report: str


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary to use: ``AVSC_FFMPEG``, else the wheel's, else ``ffmpeg`` on PATH.

    Raises:
        AvscError: none found.
    """
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


def is_bundled(exe: str) -> bool:
    """Whether ``exe`` is the static build shipped in the ``imageio-ffmpeg`` wheel."""
    return "imageio_ffmpeg" in Path(exe).parts


def ffmpeg_env(exe: str) -> dict[str, str] | None:
    """The environment to run ``exe`` in (None: this process's, unchanged); see the module doc."""
    if not is_bundled(exe):
        return None
    return {**os.environ, "GCONV_PATH": _NO_GCONV}


def signal_of(returncode: int) -> str | None:
    """``SIGSEGV`` for a process killed by SIGSEGV (status -11, or 139 through a shell); else None."""
    number = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    if returncode > 128 and number not in _CRASH_SIGNALS:
        return None
    try:
        return signal.Signals(number).name if number > 0 else None
    except ValueError:
        return f"signal {number}"


def report_problem(report: str, returncode: int) -> str | None:
    """The problem :data:`FAILURE_MARKERS` finds in a report, or None."""
    for marker, problem in FAILURE_MARKERS:
        if marker in report and (returncode != 0 or marker in ALWAYS_FATAL):
            return problem
    return None


def decode_errors(report: str) -> list[str]:
    """The lines of an ffmpeg report (run with ``-loglevel error``) that are decode errors:
    every line but those of :data:`HARMLESS_DECODE_MESSAGES`, in ffmpeg's own words."""
    lines = [line.strip() for line in report.splitlines() if line.strip()]
    return [line for line in lines if not any(harmless in line for harmless in HARMLESS_DECODE_MESSAGES)]


def check_decoded_cleanly(path: str | Path, run: FFmpegRun, what: str, hint: str = HINT) -> None:
    """Reject a file whose decoding reported errors (a damaged stream decodes to wrong samples
    or pixels while ffmpeg exits 0).

    Raises:
        MediaError: naming the file, how many errors ffmpeg reported and the first in its words.
    """
    errors = decode_errors(run.report)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise MediaError(
            path, f"ffmpeg reported {len(errors)} decode error(s) in its {what}: {errors[0][:200]}{more}", hint
        )


# ffmpeg's http protocol: reconnect on dropped connections and network errors, and give up
# on a silent server after rw_timeout (microseconds) instead of hanging.
_URL_OPTIONS = (
    "-reconnect",
    "1",
    "-reconnect_on_network_error",
    "1",
    "-reconnect_delay_max",
    "10",
    "-rw_timeout",
    "60000000",
)


def media_path(path: str | Path) -> Path | str:
    """A local media path as a :class:`~pathlib.Path`; an ``s3://`` URI kept as it is."""
    from avsc.storage.s3 import is_remote

    return str(path) if is_remote(str(path)) else Path(path)


def local_file_argument(path: str | Path) -> str:
    """A local file as ffmpeg must be given it: ``file:`` and the absolute path.

    ffmpeg reads the text before a ``:`` as a protocol name when it is made of letters, digits
    and ``+-.``: a relative ``scene: park.mp4`` is the unknown protocol ``scene`` ("Protocol
    not found"), and ``c:/x.mp4`` or ``http:x.mp4`` worse. The ``file:`` protocol named
    explicitly, with an absolute path, reads any file name as a file name.
    """
    return f"file:{Path(path).absolute()}"


def _ffmpeg_inputs(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """``args`` with each ``-i s3://...`` read through a presigned URL and each ``-i`` that is a
    local file named as :func:`local_file_argument` does; {URL: URI} to redact."""
    from avsc.storage.s3 import is_remote

    out: list[str] = []
    urls: dict[str, str] = {}
    for i, arg in enumerate(args):
        if i > 0 and args[i - 1] == "-i" and is_remote(arg):
            from avsc.storage.locations import ffmpeg_input

            url = ffmpeg_input(arg)
            urls[url] = arg
            out[-1:] = [*_URL_OPTIONS, "-i"]
            out.append(url)
        elif i > 0 and args[i - 1] == "-i" and not arg.startswith("file:") and os.path.isfile(arg):
            out.append(local_file_argument(arg))  # not pipe:, a URL or a filter graph: a file
        else:
            out.append(arg)
    return out, urls


def redact(report: str, urls: dict[str, str]) -> str:
    """``report`` with every presigned URL (and any signature left) replaced by its ``s3://`` URI."""
    import re

    for url, uri in urls.items():
        report = report.replace(url, uri).replace(url.split("?", 1)[0], uri)
    return re.sub(r"X-Amz-[A-Za-z-]+=[^&\s\"']+", "X-Amz-…", report) if urls else report


def run_ffmpeg(
    path: str | Path,
    args: list[str],
    *,
    what: str = "streams",
    timeout_s: float = 300.0,
    hint: str = HINT,
    check: bool = True,
    input_bytes: bytes | None = None,
    exe: str | None = None,
) -> FFmpegRun:
    """Run ffmpeg with ``args`` (everything after the binary) on ``path`` and check the outcome.

    Args:
        path: the media file the run is about (named in every error).
        args: ffmpeg's arguments (e.g. an ``ffmpeg-python`` graph's ``.get_args()``);
            ``-nostdin`` and ``-hide_banner`` are added. An input (``-i``) that is an
            ``s3://`` URI is read through a presigned URL.
        what: what is being read, for messages ("audio", "video", "streams").
        timeout_s: stop ffmpeg after this many seconds.
        hint: what the user can do about a broken file.
        check: raise on a failure marker or a non-zero exit status (a crash or a timeout
            always raises).
        input_bytes: data for ffmpeg's standard input (``pipe:0``), if any.
        exe: the binary to run (default :func:`ffmpeg_exe`).

    Returns:
        An :class:`FFmpegRun`.

    Raises:
        FFmpegCrash: ffmpeg was killed by a signal.
        MediaError: the report says the file is unusable, ffmpeg failed, or it ran too long.
    """
    exe = exe or ffmpeg_exe()
    args, urls = _ffmpeg_inputs(args)
    cmd = [exe, "-nostdin", "-hide_banner", *args]
    try:
        proc = subprocess.run(
            cmd,
            input=input_bytes,
            stdin=subprocess.DEVNULL if input_bytes is None else None,
            capture_output=True,
            timeout=timeout_s,
            env=ffmpeg_env(exe),
        )
    except subprocess.TimeoutExpired:
        raise MediaError(path, f"ffmpeg did not finish reading its {what} within {timeout_s:.0f} s", hint) from None
    except OSError as exc:
        raise AvscError(
            f"cannot run ffmpeg {exe!r}: {exc.strerror or exc} (check AVSC_FFMPEG, or reinstall imageio-ffmpeg)"
        ) from None
    report = redact(proc.stderr.decode("utf-8", errors="replace"), urls)
    crashed = signal_of(proc.returncode)
    if crashed:
        log.debug("ffmpeg killed by %s on %s: %s", crashed, path, redact(" ".join(cmd), urls))
        raise FFmpegCrash(path, crashed, what, exe)
    if check:
        problem = report_problem(report, proc.returncode)
        if problem:
            raise MediaError(path, problem, hint)
        if proc.returncode != 0:
            lines = [line.strip() for line in report.splitlines() if line.strip()]
            detail = lines[-1][:160] if lines else f"exit status {proc.returncode}"
            raise MediaError(path, f"ffmpeg failed while reading its {what} ({detail})", hint)
    return FFmpegRun(proc.returncode, proc.stdout, report)
