"""ImageNet weights of the visual backbones: a local file when there is one, else Keras' download.

``keras.applications`` keeps downloaded weights in its cache, ``$KERAS_HOME/models`` or
``~/.keras/models``, but only where it can write: as another user, or with a read-only root
file system, it silently switches to ``/tmp/.keras``, misses a file baked into an image and
downloads it again (offline: ``URL fetch failure``). So avsc looks for the file itself, by the
name Keras gives it, in these folders in turn and hands Keras its path:

1. ``$AVSC_WEIGHTS_DIR`` (the images set ``/opt/avsc/weights``, filled at build time);
2. ``$KERAS_HOME/models``, then ``~/.keras/models`` (Keras' own cache, e.g. on a laptop).

Only when none has it does Keras download it; if that fails, :func:`imagenet_download` turns
the failure into a :class:`~avsc.errors.ConfigError` that names the folders and what to do.
Environment variables are read when called, never at import.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from avsc.errors import ConfigError

WEIGHTS_DIR_ENV = "AVSC_WEIGHTS_DIR"


@dataclass(frozen=True)
class WeightsFile:
    """One network's ImageNet weights without its top, as ``keras.applications`` publishes them.

    Attributes:
        network: the ``keras.applications`` builder.
        name: file name in Keras' cache (and in ``$AVSC_WEIGHTS_DIR``).
        algorithm: ``md5`` or ``sha256``, as Keras checks the download.
        digest: hex digest Keras checks the download against.
    """

    network: str
    name: str
    algorithm: str
    digest: str

    def matches(self, path: str | Path) -> bool:
        """Whether ``path`` has the published digest (True: the file Keras would download)."""
        digest = hashlib.new(self.algorithm)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest() == self.digest


# Visual backbone kind -> its weights file (keras/src/applications/{inception_v3,convnext}.py).
IMAGENET_WEIGHTS: dict[str, WeightsFile] = {
    "inception": WeightsFile(
        "InceptionV3",
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "md5",
        "bcbd6486424b2319ff4ef7d526e38f63",
    ),
    "convnext": WeightsFile(
        "ConvNeXtTiny",
        "convnext_tiny_notop.h5",
        "sha256",
        "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
    ),
}


def weights_dirs() -> list[Path]:
    """The folders searched for a weights file, in order (see the module docstring)."""
    folders = []
    if os.environ.get(WEIGHTS_DIR_ENV):
        folders.append(Path(os.environ[WEIGHTS_DIR_ENV]))
    if os.environ.get("KERAS_HOME"):
        folders.append(Path(os.environ["KERAS_HOME"]) / "models")
    folders.append(Path("~/.keras/models").expanduser())
    return list(dict.fromkeys(folders))


def _weights_file(kind: str) -> WeightsFile:
    if kind not in IMAGENET_WEIGHTS:
        raise ConfigError(
            f"no ImageNet weights for visual backbone kind {kind!r}; choose one of {', '.join(IMAGENET_WEIGHTS)}"
        )
    return IMAGENET_WEIGHTS[kind]


def find_imagenet_weights(kind: str) -> Path | None:
    """The local ImageNet weights file of ``kind`` (``inception``, ``convnext``), or None.

    Raises:
        ConfigError: unknown kind.
    """
    name = _weights_file(kind).name
    for folder in weights_dirs():
        if (folder / name).is_file():
            return folder / name
    return None


@contextlib.contextmanager
def imagenet_download(kind: str) -> Iterator[None]:
    """Around a ``keras.applications`` call with ``weights="imagenet"``: a failed download
    becomes a ConfigError naming the file, the folders searched and what to do.

    Raises:
        ConfigError: Keras could not fetch the weights (offline, proxy, firewall).
    """
    try:
        yield
    except Exception as exc:  # Keras raises a bare Exception("URL fetch failure on ...")
        if "URL fetch failure" not in str(exc) and not isinstance(exc, urllib.error.URLError):
            raise
        weights = _weights_file(kind)
        searched = ", ".join(str(folder) for folder in weights_dirs())
        raise ConfigError(
            f"{weights.network} ImageNet weights: {weights.name} is not in {searched}, and Keras "
            f"could not download it ({exc}). Copy the file from a machine that has it into one of "
            f"those folders (set {WEIGHTS_DIR_ENV} to choose the folder; the avsc images bake "
            f"it into /opt/avsc/weights, see `make images WEIGHTS_DIR=...`), or train from "
            f"random weights with train.weights=none"
        ) from exc


__all__ = [
    "IMAGENET_WEIGHTS",
    "WEIGHTS_DIR_ENV",
    "WeightsFile",
    "find_imagenet_weights",
    "imagenet_download",
    "weights_dirs",
]
