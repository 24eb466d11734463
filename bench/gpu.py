"""avsc's own training step on an accelerator: store -> NumPy stream -> mixup -> model -> KL + L2 -> Adam.

For each backbone, on a synthetic feature store written to local disk at the preset's shapes:

- **full step**: samples/s of ``train_on_batch`` fed by the NumPy stream
  (:func:`avsc.training.numpy_stream.train_batches`, one batch built ahead in a thread, as
  Keras' ``fit`` does with ``workers``), with the step time split into *input wait* (blocked on
  the next batch) and *compute* (in the step, including the host-to-device copy);
- **compute-bound**: the same model and step on one batch held on the device;
- **peak memory**: the accelerator's peak bytes in use (JAX's ``memory_stats``); on a CPU,
  which has none, the process' peak RSS instead;
- **FLOPs**: a forward pass's FLOPs per sample from XLA's cost analysis of the compiled
  model; a training step is counted as 3x forward (forward + backward); the share of the
  chip's bf16 peak is ``3 * forward FLOPs * samples/s / peak`` (peak: ``--peak-tflops`` or
  the table :data:`PEAK_BF16_TFLOPS` by device name);

for each setting asked for: XLA compilation (``--jit``: Keras' ``jit_compile``) and the
precision policy (``--precision``: ``float32``, ``mixed_bfloat16``).

Runs on Keras' JAX backend unless ``KERAS_BACKEND`` says otherwise. Needs only avsc's
``src/``, keras and its small dependencies, pydantic, lazy_loader, NumPy, pyarrow and Pillow
(``scripts/device-bench.sh`` runs it on a machine with JAX and nothing else). Prints a table
and writes a JSON summary (``--json``). Not a timed test.

Usage:
    python bench/gpu.py --device cpu --preset quick --clips 64 --json out.json   # smoke run
    python bench/gpu.py --preset paper --precision float32,mixed_bfloat16 --json gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

BACKBONES = ("aud-mel", "aud-gam", "aud-cqt", "vis-inc", "vis-conv")
# Dense bf16 tensor-core peak (TFLOP/s, no sparsity) by a substring of the device's name.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def _setup_device(device: str) -> None:
    """Choose the backend's device before Keras (and JAX) are imported."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    else:
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")


def write_store(root: Path, config, n_clips: int, seed: int = 0) -> Path:
    """A store of ``n_clips`` train clips (and a few val clips) at ``config``'s shapes:
    log-spectrogram-like float16 values and smooth, textured frames (JPEG as the store keeps them)."""
    import numpy as np

    from avsc.features.spectrograms import feature_shapes
    from avsc.features.store_writer import StoreWriter
    from avsc.labels import LABELS

    shapes = feature_shapes(config)
    rng = np.random.default_rng(seed)
    n_frames, size = shapes["frames"][0], shapes["frames"][1]
    yy, xx = np.mgrid[0:size, 0:size] / size
    with StoreWriter(root, config, shapes) as writer:
        for k in range(n_clips):
            arrays = {
                name: (rng.normal(-5, 1.5, size=shapes[name])).astype(np.float16) for name in ("mel", "gam", "cqt")
            }
            base = np.stack([np.sin(6 * xx + k), np.cos(5 * yy - k), np.sin(4 * (xx + yy))], axis=-1)
            frames = [
                (127 + 100 * base + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
                for _ in range(n_frames)
            ]
            arrays["frames"] = np.stack(frames)
            writer.add(f"{LABELS[k % 10]}-bench-{k}-0", LABELS[k % 10], "train", arrays)
    return root


def _device_info() -> dict:
    import keras

    info = {"backend": keras.backend.backend(), "host": platform.node(), "cpus": os.cpu_count()}
    if info["backend"] == "jax":
        import jax

        device = jax.devices()[0]
        info.update(platform=device.platform, device=getattr(device, "device_kind", str(device)), jax=jax.__version__)
    else:
        info.update(platform="cpu", device=platform.processor() or "cpu")
    info["keras"] = keras.__version__
    return info


def _peak_memory() -> tuple[int | None, str]:
    """(bytes, what): the accelerator's peak bytes in use, else this process' peak RSS."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats()
        if stats and "peak_bytes_in_use" in stats:
            return int(stats["peak_bytes_in_use"]), "device peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host peak RSS (no device memory stats)"


def _forward_flops(model, batch_x) -> float | None:
    """FLOPs of one forward pass over ``batch_x`` from XLA's cost analysis (JAX only)."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    def forward(trainable, non_trainable, x):
        return model.stateless_call(trainable, non_trainable, x, training=False)[0]

    try:
        compiled = (
            jax.jit(forward)
            .lower(
                [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables], batch_x
            )
            .compile()
        )
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return float(cost["flops"]) if cost and cost.get("flops") else None
    except Exception:  # noqa: BLE001 -- a backend without cost analysis: report n/a
        return None


def _prefetched(stream, n_batches: int):
    """Yield ``(seconds waited, batch)`` for the first ``n_batches`` of ``stream``, each built
    in a thread while the previous one trains (one batch ahead)."""
    ready: queue.Queue = queue.Queue(maxsize=2)

    def produce():
        for i in range(n_batches):
            ready.put(stream[i % len(stream)])
        ready.put(None)

    threading.Thread(target=produce, daemon=True).start()
    while True:
        began = time.perf_counter()
        batch = ready.get()
        waited = time.perf_counter() - began
        if batch is None:
            return
        yield waited, batch


def bench_backbone(
    backbone: str,
    store_dir: Path,
    cfg,
    *,
    jit: bool,
    precision: str,
    steps: int,
    warmup: int,
    peak_tflops: float | None,
) -> dict:
    import keras
    import numpy as np

    from avsc.features.store import FeatureStore
    from avsc.models.backbones import build_backbone
    from avsc.models.losses import kl_divergence_loss
    from avsc.training.mixup import with_mixup
    from avsc.training.numpy_stream import train_batches

    store = FeatureStore.open(store_dir)
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        model = build_backbone(backbone, store.shapes, cfg)
        trainer = with_mixup(model, x_dtype=np.dtype(store.spec_for(backbone).dtype).name)
        trainer.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=kl_divergence_loss, jit_compile=jit)
        stream = train_batches(
            store,
            backbone,
            batch_size=cfg.batch_size,
            mixup_alpha=cfg.mixup_alpha,
            frames_per_clip=cfg.frames_per_clip,
            seed=1,
            workers=1,
        )
        n_batches = warmup + steps
        began = time.perf_counter()
        first = stream[0]
        for _ in range(warmup):  # compilation; the first batch only, so input is not counted
            trainer.train_on_batch(*first)
        compile_s = time.perf_counter() - began

        # Full step: a stream feeding the step, one batch built ahead.
        waited = computing = 0.0
        samples = 0
        began = time.perf_counter()
        for wait, (inputs, y) in _prefetched(stream, steps):
            waited += wait
            t = time.perf_counter()
            trainer.train_on_batch(inputs, y)  # returns the loss as a number: waits for the device
            computing += time.perf_counter() - t
            samples += len(y)
        full_s = time.perf_counter() - began
        full_rate = samples / full_s

        # Compute-bound: one batch held on the device.
        inputs, y = first
        if keras.backend.backend() == "jax":
            import jax

            inputs, y = jax.device_put(inputs), jax.device_put(y)
        trainer.train_on_batch(inputs, y)
        began = time.perf_counter()
        for _ in range(steps):
            trainer.train_on_batch(inputs, y)
        bound_rate = steps * len(first[1]) / (time.perf_counter() - began)

        x_float = np.asarray(first[0][0], np.float32)
        flops = _forward_flops(model, x_float)
        per_sample = flops / len(x_float) if flops else None
        memory, memory_kind = _peak_memory()
        stream.close()
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    row = {
        "backbone": backbone,
        "jit_compile": jit,
        "precision": precision,
        "batch_size": cfg.batch_size,
        "params": int(model.count_params()),
        "steps": steps,
        "warmup_steps": warmup,
        "compile_s": round(compile_s, 2),
        "batches_in_stream": len(stream),
        "n_batches_run": n_batches,
        "full_samples_per_s": round(full_rate, 1),
        "compute_bound_samples_per_s": round(bound_rate, 1),
        "full_vs_bound": round(full_rate / bound_rate, 3),
        "step_ms": round(1e3 * full_s / steps, 2),
        "input_wait_ms": round(1e3 * waited / steps, 2),
        "compute_ms": round(1e3 * computing / steps, 2),
        "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind,
        "forward_gflops_per_sample": round(per_sample / 1e9, 4) if per_sample else None,
    }
    if per_sample and peak_tflops:
        row["bf16_peak_share"] = round(3 * per_sample * full_rate / (peak_tflops * 1e12), 5)
        row["bf16_peak_share_compute_bound"] = round(3 * per_sample * bound_rate / (peak_tflops * 1e12), 5)
    return row


def report(summary: dict) -> None:
    d = summary["device"]
    print(
        f"\n{d.get('device')} ({d.get('platform')}), Keras {d['keras']} on {d['backend']}, preset "
        f"{summary['preset']}, {summary['clips']} clips on local disk; samples = clips (audio) or frames (visual)"
    )
    print(
        f"{'backbone':9s} {'jit':>3s} {'precision':>15s} {'full /s':>9s} {'bound /s':>9s} {'ratio':>6s} "
        f"{'step ms':>8s} {'wait ms':>8s} {'compute':>8s} {'peak MiB':>9s} {'GFLOP/s.':>9s} {'bf16 %':>7s}"
    )
    for r in summary["results"]:
        share = f"{100 * r['bf16_peak_share']:.2f}" if r.get("bf16_peak_share") is not None else "n/a"
        gflops = f"{r['forward_gflops_per_sample']:.3f}" if r["forward_gflops_per_sample"] else "n/a"
        print(
            f"{r['backbone']:9s} {'on' if r['jit_compile'] else 'off':>3s} {r['precision']:>15s} "
            f"{r['full_samples_per_s']:9.1f} {r['compute_bound_samples_per_s']:9.1f} {r['full_vs_bound']:6.2f} "
            f"{r['step_ms']:8.1f} {r['input_wait_ms']:8.1f} {r['compute_ms']:8.1f} "
            f"{r['peak_memory_bytes'] / 2**20:9.0f} {gflops:>9s} {share:>7s}"
        )
    print(
        f"peak memory: {summary['results'][0]['peak_memory_kind'] if summary['results'] else ''}; "
        "GFLOP/s. = forward GFLOP per sample; bf16 % = 3 x forward FLOPs x full rate / peak"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="gpu")
    parser.add_argument("--preset", choices=("paper", "quick"), default="paper")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. train.batch_size=64 (repeatable)",
    )
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--clips", type=int, default=256, help="train clips of the synthetic store")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (XLA compilation)")
    parser.add_argument("--jit", default="on", help="jit_compile settings: on, off or on,off")
    parser.add_argument(
        "--precision", default="float32", help="dtype policies, comma-separated: float32, mixed_bfloat16, mixed_float16"
    )
    parser.add_argument("--peak-tflops", type=float, help="the chip's dense bf16 peak (default: by device name)")
    parser.add_argument("--store", type=Path, help="keep (and reuse) the synthetic store here")
    parser.add_argument("--json", type=Path, help="write the JSON summary to this file")
    args = parser.parse_args(argv)
    _setup_device(args.device)

    from avsc.config import load_config

    config = load_config(preset=args.preset, overrides=[*args.set, "train.weights=none"])
    info = _device_info()
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in str(info.get("device"))), None)
    summary = {
        "device": info,
        "preset": args.preset,
        "overrides": args.set,
        "clips": args.clips,
        "peak_bf16_tflops": peak,
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="avsc-gpu-bench-") as scratch:
        store_dir = args.store or Path(scratch) / "features"
        if not (store_dir / "store.json").exists():
            began = time.perf_counter()
            write_store(store_dir, config.features, args.clips)
            summary["store_write_s"] = round(time.perf_counter() - began, 1)
        for backbone in args.backbones.split(","):
            for jit in args.jit.split(","):
                for precision in args.precision.split(","):
                    row = bench_backbone(
                        backbone,
                        store_dir,
                        config.train,
                        jit=jit == "on",
                        precision=precision,
                        steps=args.steps,
                        warmup=args.warmup,
                        peak_tflops=peak,
                    )
                    summary["results"].append(row)
                    print(json.dumps(row), flush=True)
    report(summary)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
