"""Stand-in ImageNet weights files for tests: random-initialised networks saved under the file
names and in the (legacy HDF5) format ``keras.applications`` publishes, so the offline path
(``AVSC_WEIGHTS_DIR``, ``make images WEIGHTS_DIR=...``) can be exercised without the internet.
They load like the real files but hold no ImageNet knowledge; their digests differ from the
published ones (:meth:`avsc.models.pretrained.WeightsFile.matches` is False).
"""

from __future__ import annotations

from pathlib import Path

from avsc.models.pretrained import IMAGENET_WEIGHTS


def make_standin_weights(folder: str | Path, kinds: tuple[str, ...] = tuple(IMAGENET_WEIGHTS)) -> dict[str, Path]:
    """Write one stand-in file per visual backbone kind into ``folder``; kind -> path."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind in kinds:
        spec = IMAGENET_WEIGHTS[kind]
        path = folder / spec.name
        if not path.is_file():
            network = getattr(keras.applications, spec.network)(include_top=False, weights=None, pooling="avg")
            with h5py.File(path, "w") as handle:
                legacy_h5_format.save_weights_to_hdf5_group(handle, network)
        paths[kind] = path
    return paths
