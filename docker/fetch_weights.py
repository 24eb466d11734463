"""Download the ImageNet weights the visual backbones start from, at image build time.

Run once in a Dockerfile step with KERAS_HOME set, so that training inside the image never
reaches the network. Fails the build if a weights file did not land in the cache.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> int:
    import keras

    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    builders = {
        "InceptionV3": keras.applications.InceptionV3,
        "ConvNeXtTiny": keras.applications.ConvNeXtTiny,
    }
    for name, build in builders.items():
        model = build(weights="imagenet", include_top=False)
        print(f"{name}: {model.count_params():,} parameters cached")
    files = sorted(p.name for p in cache.glob("*.h5"))
    if len(files) < len(builders):
        print(f"expected {len(builders)} weights files in {cache}, found {files}", file=sys.stderr)
        return 1
    print("weights in", cache, ":", ", ".join(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
