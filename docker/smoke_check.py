"""Smoke check run inside an avsc image, fed on stdin by scripts/check-image.sh:

    docker run --rm -i --read-only --tmpfs /tmp --network none [--user UID:GID] IMAGE python - < docker/smoke_check.py

As a cluster runs it (any user, read-only root file system, no network), checks that:
the root file system is read-only; Debian's ffmpeg is the one avsc uses; the baked ImageNet
weights resolve by path and load into both visual backbones; every ``avsc`` command starts;
a tiny preprocess (demo data -> ingest -> 2 worker processes) completes, with librosa's numba
kernels copied from the image's prebuilt ones and none compiled again. Exits non-zero on the
first failure, printing what failed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def step(name: str, began: float) -> None:
    print(f"ok  {name} ({time.perf_counter() - began:.1f} s)", flush=True)


def avsc(*args: str) -> str:
    done = subprocess.run(["avsc", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"FAIL avsc {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def files(root: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}


def main() -> int:
    print(f"user {os.getuid()}:{os.getgid()}, HOME={os.environ.get('HOME')}", flush=True)
    began = time.perf_counter()
    if os.access("/", os.W_OK) or os.access("/opt/avsc", os.W_OK):
        sys.exit("FAIL the root file system is writable: run with --read-only")
    ffmpeg = os.environ.get("AVSC_FFMPEG", "")
    if ffmpeg != "/usr/bin/ffmpeg" or not os.access(ffmpeg, os.X_OK):
        sys.exit(f"FAIL AVSC_FFMPEG={ffmpeg!r} is not Debian's /usr/bin/ffmpeg")
    step("read-only root, Debian ffmpeg", began)

    began = time.perf_counter()
    from avsc.models.backbones import build_visual_backbone
    from avsc.models.pretrained import IMAGENET_WEIGHTS, find_imagenet_weights

    for kind, weights in IMAGENET_WEIGHTS.items():
        path = find_imagenet_weights(kind)
        expected = os.path.join(os.environ["AVSC_WEIGHTS_DIR"], weights.name)
        if str(path) != expected:
            sys.exit(f"FAIL {kind}: ImageNet weights resolve to {path}, not the baked {expected}")
        size = 75 if kind == "inception" else 32
        model = build_visual_backbone(kind, image_size=size, weights="imagenet", dense_units=8)
        print(f"    {weights.network}: {path} loaded, {model.count_params():,} parameters", flush=True)
    step("baked ImageNet weights load with no network", began)

    began = time.perf_counter()
    listing = avsc("--help").split("positional arguments:")[1].split("options:")[0]
    commands = re.findall(r"^    (\S+)", listing, flags=re.MULTILINE)  # "    name  help"
    if len(commands) < 5:
        sys.exit(f"FAIL could not read the commands from avsc --help: {commands}")
    for command in commands:
        avsc(command, "--help")
    step(f"avsc --help and {len(commands)} commands: {' '.join(commands)}", began)

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="smoke-") as work:
        dataset, manifest, features = (os.path.join(work, name) for name in ("dataset", "manifest.parquet", "features"))
        avsc(
            "demo-data",
            dataset,
            "--classes",
            "2",
            "--clips-per-class",
            "3",
            "--locations-per-class",
            "3",
            "--seconds",
            "2",
            "--width",
            "96",
            "--height",
            "72",
        )
        avsc("ingest", dataset, "-o", manifest)
        out = avsc("preprocess", manifest, "-o", features, "--preset", "quick", "--workers", "2", "--quiet")
        if " 6 processed" not in out:
            sys.exit(f"FAIL preprocess did not process the 6 clips:\n{out}")
        print("    " + out.strip().splitlines()[0], flush=True)
    step("tiny preprocess (2 workers)", began)

    began = time.perf_counter()
    seed, cache = os.environ["AVSC_NUMBA_CACHE_SEED"], os.environ["NUMBA_CACHE_DIR"]
    prebuilt = files(seed)
    if not any(name.endswith(".nbi") for name in prebuilt):
        sys.exit(f"FAIL {seed} holds no numba kernels")
    if files(cache) != prebuilt:  # numba rewrites an index whenever it compiles
        sys.exit(
            f"FAIL numba compiled kernels again: {cache} differs from the prebuilt {seed} "
            "(another librosa, or NUMBA_CPU_NAME unset)"
        )
    step(f"librosa's {sum(n.endswith('.nbi') for n in prebuilt)} prebuilt numba kernels used, none compiled", began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
