"""What verifying the feature store on read costs: one part of ``mel`` read three ways.

A part of ``--clips`` paper-preset clips (128 x 715 x 2 float16 spectrograms, 11.7 MB for 32),
on local disk with a warm page cache, one thread:

- ``plain``: the ``mel`` column read with pyarrow, no checks (what avsc did before);
- ``page checksums``: the same with Parquet page-checksum (CRC-32) verification;
- ``avsc``: :func:`avsc.features.part_reader.read_part_feature`, which also hashes every clip's value
  (SHA-256) and compares it with the part's and the index's digests.

Prints milliseconds per part, clips/s and MB/s for each (median of ``--repeats``).

Usage:
    python bench/store_verify.py --clips 32 --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    import numpy as np
    import pyarrow.parquet as pq

    from avsc.config import FeatureConfig
    from avsc.features.part_reader import read_part_feature
    from avsc.features.store import FeatureStore
    from avsc.features.store_writer import StoreWriter

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "features"
        with StoreWriter(root, FeatureConfig(), {"mel": [128, 715, 2]}, part_clips=args.clips) as writer:
            for i in range(args.clips):
                writer.add(
                    f"bus-bench-{i}-1", "bus", "train", {"mel": rng.normal(-4, 2, (128, 715, 2)).astype(np.float16)}
                )
        store = FeatureStore.open(root)
        part, spec = store.parts("train")[0], store.specs["mel"]

        def plain(verify: bool):
            with open(part.location, "rb") as handle:
                return pq.read_table(handle, columns=["mel"], page_checksum_verification=verify)

        ways = {
            "plain": lambda: plain(False),
            "page checksums": lambda: plain(True),
            "avsc (checksums + SHA-256)": lambda: read_part_feature(part, spec),
        }
        nbytes = args.clips * spec.nbytes
        for name, read in ways.items():
            read()
            times = []
            for _ in range(args.repeats):
                began = time.perf_counter()
                read()
                times.append(time.perf_counter() - began)
            seconds = statistics.median(times)
            print(
                f"{name:28s} {seconds * 1000:7.1f} ms/part  {args.clips / seconds:7.0f} clips/s  "
                f"{nbytes / seconds / 1e6:6.0f} MB/s"
            )


if __name__ == "__main__":
    main()
