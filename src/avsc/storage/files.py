"""Small local-file helpers shared by every stage: atomic writes, checksums, backbone paths.

JSON of a file or object: :func:`avsc.storage.locations.read_json` and
:func:`~avsc.storage.locations.write_json`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    Readers never see a half-written file: on error the temporary file is removed and
    any existing ``path`` is left untouched. Works for files and for directories.
    ``suffix`` ends the temporary name (for writers that insist on one, such as Keras).

    Example::

        with atomic_path(out / "table.parquet") as tmp:
            pq.write_table(table, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the caller creates it (as a file or a directory)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``hashlib.file_digest``: read in chunks, never whole).

    The one file hasher of avsc: model and bundle checksums, embeddings provenance and the
    object store's transfer checks all go through it.

    Args:
        path: the file.
        algorithm: a ``hashlib`` name; ``sha256`` everywhere except the S3 ETag check (``md5``).

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file (see :func:`file_digest`)."""
    return file_digest(path, "sha256")


def backbone_paths(
    source: str | Path | Mapping[str, str | Path],
    layout: str,
    *,
    what: str,
    hint: str,
) -> dict[str, Path]:
    """Backbone -> path of its file or folder, from a folder laid out by the CLI or from a mapping.

    The CLI keeps one entry per backbone in one folder (``embeddings/<backbone>.parquet``,
    ``models/<backbone>/``); a pipeline step gets each backbone's artifact at a path of its
    own and passes a mapping. Both resolve here, so the library reads either.

    Args:
        source: the folder, or a mapping backbone -> path.
        layout: the entry of one backbone in the folder, with ``{backbone}`` in it
            (``"{backbone}.parquet"``, ``"{backbone}"``).
        what: what the folder holds, for errors (``"embeddings"``).
        hint: what to do when the folder does not exist.

    Returns:
        For a folder: every backbone of :data:`avsc.config.BACKBONES` -> its entry, whether
        or not it exists (callers say which one they miss). For a mapping: its backbones,
        in the order of ``BACKBONES``.

    Raises:
        DataError: the folder does not exist; a path of the mapping does not exist.
        ConfigError: a key of the mapping is not a backbone.
    """
    from avsc.config import BACKBONES
    from avsc.errors import ConfigError, DataError

    if not isinstance(source, Mapping):
        root = Path(source)
        if not root.is_dir():
            raise DataError(root, f"{what} folder not found", hint)
        return {backbone: root / layout.format(backbone=backbone) for backbone in BACKBONES}
    unknown = sorted(set(source) - set(BACKBONES))
    if unknown:
        raise ConfigError(
            f"{what}: unknown backbone(s) {', '.join(map(str, unknown))}; expected some of {', '.join(BACKBONES)}"
        )
    paths = {backbone: Path(source[backbone]) for backbone in BACKBONES if backbone in source}
    for backbone, path in paths.items():
        if not path.exists():
            raise DataError(path, f"{what} of {backbone} not found")
    return paths
