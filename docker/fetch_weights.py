"""Put the ImageNet weights of the visual backbones into an image, at build time.

    python fetch_weights.py --into /opt/avsc/weights

For each network of :data:`avsc.models.pretrained.IMAGENET_WEIGHTS`, a file already in the
folder (copied from ``docker/weights/``, i.e. ``make images WEIGHTS_DIR=...`` for builds without
internet access) is kept; a missing one is downloaded by Keras (from storage.googleapis.com).
Every file must then load into its network, or the build fails. A file whose digest differs
from the one Keras publishes is reported but kept (e.g. weights re-saved by an operator).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--into", required=True, type=Path, help="weights folder (AVSC_WEIGHTS_DIR)")
    args = parser.parse_args(argv)
    args.into.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="keras-download-") as download:
        os.environ["KERAS_HOME"] = download  # read when keras is imported: downloads land here
        import keras

        from avsc.models.pretrained import IMAGENET_WEIGHTS

        for kind, weights in IMAGENET_WEIGHTS.items():
            network = getattr(keras.applications, weights.network)
            path = args.into / weights.name
            if path.is_file():
                print(f"{weights.network}: {path} given ({path.stat().st_size / 1e6:.1f} MB)")
            else:
                print(f"{weights.network}: {weights.name} not given; downloading", flush=True)
                network(include_top=False, weights="imagenet")
                shutil.copyfile(Path(download) / "models" / weights.name, path)
            model = network(include_top=False, weights=str(path), pooling="avg")
            verdict = "matches" if weights.matches(path) else "DIFFERS FROM"
            print(
                f"{weights.network}: {model.count_params():,} parameters loaded from {path}; "
                f"{weights.algorithm} {verdict} the published digest ({kind})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
