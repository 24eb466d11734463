"""Preprocessing benchmark: throughput of ``avsc preprocess`` against a naive path and a decode floor.

Clips shaped like the real data (10 s, 1280x720, 30 frames/s, H.264 at ``--bitrate`` +
stereo 48 kHz AAC; picture: ffmpeg's ``testsrc2`` with moving noise, so the encoder spends
its bitrate; sound: the demo dataset's scene synthesiser) are generated once, then timed:

- full: :func:`avsc.features.preprocess.preprocess` with ``--workers`` processes, paper preset
  (audio demux, 20 frames at 224x224, MEL + GAM + CQT at 128 x 715 x 2, clip files),
  in a fresh subprocess, worker start-up included;
- naive: one process, per clip: ffmpeg demux to WAV, ``librosa.load`` at 32 kHz, then per
  channel librosa ``melspectrogram``, librosa ``cqt`` (default hop) and the ``gammatone``
  package's exact ``gtgram``; no frames. Slow, so it runs on ``--naive-clips`` clips;
- floor: ffmpeg decoding each clip's audio and video to nothing, ``--workers`` at a time,
  decoder threads as in the full run; once decoding every frame, once decoding reference
  frames only (what frame sampling decodes).

Also a per-stage breakdown of one clip in this process (after a warm-up clip), and the
peak RSS of the largest worker (or ffmpeg) process of the full run.

Usage:
    python bench/preprocess.py                       # 8 clips, 2 workers
    python bench/preprocess.py --clips 16 --workers 4 --keep /var/tmp/bench-clips
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SECONDS = 10.0
WIDTH, HEIGHT, FPS = 1280, 720, 30


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (ffmpeg runs) so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def make_clips(folder: Path, count: int, bitrate: str) -> list[Path]:
    """Write ``count`` real-data-shaped clips (kept if already there)."""
    import numpy as np

    from avsc.data.demo_content import synth_audio
    from avsc.labels import LABELS
    from avsc.media.encode import write_wav
    from avsc.media.ffmpeg import ffmpeg_exe

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        label = LABELS[k % len(LABELS)]
        path = folder / f"{label}-bench-{k}-0.mp4"
        paths.append(path)
        if path.exists():
            continue
        wav = folder / f"clip{k}.wav"
        audio = synth_audio(label, SECONDS, 48000, np.random.default_rng(k), np.random.default_rng(1000 + k))
        write_wav(wav, audio, 48000, sample_width=2)
        source = (
            f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}:duration={SECONDS},"
            f"hue=h={37 * k},noise=alls=6:allf=t:all_seed={k}"
        )
        cmd = [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            source,
            "-i",
            str(wav),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-b:v",
            bitrate,
            "-maxrate",
            bitrate,
            "-bufsize",
            "10M",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ar",
            "48000",
            "-ac",
            "2",
            "-shortest",
            "-movflags",
            "+faststart",
            str(path) + ".tmp.mp4",
        ]
        subprocess.run(cmd, check=True)
        os.replace(str(path) + ".tmp.mp4", path)
        wav.unlink()
    return paths


def write_bench_manifest(paths: list[Path], out: Path) -> Path:
    from avsc.data.manifest import write_manifest

    rows = []
    for path in paths:
        label = path.stem.split("-bench-")[0]
        rows.append(
            {
                "clip_id": path.stem,
                "video": path.name,
                "audio": None,
                "label": label,
                "city": "bench",
                "location": f"bench-{path.stem}",
                "split": "train",
                "duration_s": SECONDS,
                "fps": float(FPS),
                "width": WIDTH,
                "height": HEIGHT,
                "audio_channels": 2,
                "audio_rate": 48000,
            }
        )
    return write_manifest(rows, out, dataset_root=paths[0].parent)


class ProcessWatcher:
    """Polls /proc for the descendants of this process: peak RSS (VmHWM) and CPU of each.

    The preprocess workers are children of multiprocessing's fork server, not of this
    process, so ``getrusage(RUSAGE_CHILDREN)`` cannot see them; /proc can.
    """

    def __init__(self, interval_s: float = 0.1):
        import threading

        self.interval_s = interval_s
        self.peak_kib: dict[int, int] = {}
        self.cpu_ticks: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _descendants(self) -> list[int]:
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        found, frontier = [], [os.getpid()]
        while frontier:
            pid = frontier.pop()
            children = [child for child, parent in parents.items() if parent == pid]
            found += children
            frontier += children
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self._descendants():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kib[pid] = max(self.peak_kib.get(pid, 0), int(line.split()[1]))
                    elif line.startswith("Name:"):
                        self.names[pid] = line.split(None, 1)[1]
                self.cpu_ticks[pid] = int(fields[11]) + int(fields[12])  # utime + stime
            self._stop.wait(self.interval_s)

    def peak_mib(self, python: bool) -> float:
        peaks = [kib for pid, kib in self.peak_kib.items() if self.names.get(pid, "").startswith("python") == python]
        return max(peaks, default=0) / 1024.0

    def cpu_s(self) -> float:
        return sum(self.cpu_ticks.values()) / os.sysconf("SC_CLK_TCK")


def measure_full(manifest: Path, out_dir: Path, workers: int) -> dict:
    """Run the full preprocess here (called in a fresh interpreter by :func:`run_full`)."""
    from avsc.config import load_config
    from avsc.features.preprocess import preprocess

    start = time.perf_counter()
    cpu = cpu_seconds()
    with ProcessWatcher() as watcher:
        # One clip a part file, so each clip's completion time is a file's mtime (steady rate).
        result = preprocess(
            manifest,
            out_dir,
            config=load_config(preset="paper").features,
            workers=workers,
            progress=False,
            part_clips=1,
        )
    return {
        "wall_s": time.perf_counter() - start,
        "processed": result.processed,
        "rejected": len(result.rejected),
        "worker_peak_rss_mib": watcher.peak_mib(python=True),
        "ffmpeg_peak_rss_mib": watcher.peak_mib(python=False),
        "parent_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        # Workers' own CPU (sampled every 0.1 s) + this process and its waited children.
        "cpu_s": watcher.cpu_s() + cpu_seconds() - cpu,
    }


def run_full(manifest: Path, out_dir: Path, workers: int) -> dict:
    """Time the full preprocess in a fresh interpreter (imports and worker start-up included)."""
    proc = subprocess.run(
        [sys.executable, __file__, "--measure-full", str(manifest), str(out_dir), str(workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # Steady state, without worker start-up: completion times of the clip files after each
    # worker's first clip.
    done = sorted(p.stat().st_mtime for p in (out_dir / "parts").rglob("*.parquet"))
    if len(done) > workers + 1:
        result["steady_clips_per_s"] = (len(done) - workers) / (done[-1] - done[workers - 1])
    return result


def run_naive(paths: list[Path]) -> dict:
    """One process: ffmpeg demux -> librosa.load -> mel, cqt (default hop), exact gtgram, per channel."""
    import librosa
    import numpy as np
    from gammatone.gtgram import gtgram

    from avsc.media.ffmpeg import ffmpeg_exe

    # Warm up (imports, filter caches) so only the per-clip work is timed.
    warm = np.zeros(5 * 32000, dtype=np.float32)
    librosa.feature.melspectrogram(y=warm, sr=32000, n_fft=2560, hop_length=448, n_mels=128)
    librosa.cqt(warm, sr=32000, n_bins=128, bins_per_octave=15, fmin=32.70)
    start, cpu = time.perf_counter(), cpu_seconds()
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            wav = Path(tmp) / "audio.wav"
            subprocess.run(
                [
                    ffmpeg_exe(),
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-y",
                    "-i",
                    str(path),
                    "-vn",
                    "-acodec",
                    "pcm_s16le",
                    str(wav),
                ],
                check=True,
            )
            y, sr = librosa.load(wav, sr=32000, mono=False)
            for channel in y:
                librosa.power_to_db(
                    librosa.feature.melspectrogram(y=channel, sr=sr, n_fft=2560, hop_length=448, n_mels=128)
                )
                librosa.amplitude_to_db(abs(librosa.cqt(channel, sr=sr, n_bins=128, bins_per_octave=15, fmin=32.70)))
                gtgram(channel, sr, 0.080, 0.014, 128, 50.0)
    return {"wall_s": time.perf_counter() - start, "cpu_s": cpu_seconds() - cpu, "clips": len(paths)}


def run_floor(paths: list[Path], workers: int, reference_only: bool) -> dict:
    from avsc.media.ffmpeg import ffmpeg_exe

    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0

    def decode(path: Path) -> None:
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin"]
        if threads:
            cmd += ["-threads", str(threads)]
        if reference_only:
            cmd += ["-skip_frame", "noref"]
        subprocess.run(cmd + ["-i", str(path), "-f", "null", "-"], check=True)

    start, cpu = time.perf_counter(), cpu_seconds()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(decode, paths))
    return {"wall_s": time.perf_counter() - start, "cpu_s": cpu_seconds() - cpu, "clips": len(paths)}


def stage_breakdown(paths: list[Path], out_dir: Path) -> dict:
    """Seconds per stage for one clip in this process, after one warm-up clip."""
    from avsc.config import load_config
    from avsc.features.part_writer import encode_clip
    from avsc.features.spectrograms import compute_clip_features, feature_shapes
    from avsc.features.store_format import feature_specs
    from avsc.media.decode import demux_audio, sample_frames

    config = load_config(preset="paper").features
    specs = feature_specs(config, feature_shapes(config))
    times: dict[str, float] = {}
    for round_number, path in enumerate(paths[:2]):
        marks = [time.perf_counter()]
        audio = demux_audio(path, config.audio)
        marks.append(time.perf_counter())
        frames = sample_frames(path, config.frames, seconds=config.audio.clip_seconds)
        marks.append(time.perf_counter())
        arrays = compute_clip_features(audio, frames, config)
        marks.append(time.perf_counter())
        encode_clip(path.stem, "", "", arrays, specs)
        marks.append(time.perf_counter())
        if round_number == 1 or len(paths) == 1:
            names = ("demux_audio", "sample_frames", "features", "encode_clip")
            times = {name: marks[i + 1] - marks[i] for i, name in enumerate(names)}
    return times


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--measure-full"]:
        manifest, out_dir, workers = argv[1:4]
        print(json.dumps(measure_full(Path(manifest), Path(out_dir), int(workers))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8, help="clips to generate and preprocess (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--naive-clips", type=int, default=2, help="clips for the naive path (default 2; it is slow)")
    parser.add_argument("--bitrate", default="5M", help="H.264 bitrate of the generated clips (default 5M)")
    parser.add_argument("--keep", metavar="DIR", help="keep (and reuse) the generated clips here")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip_dir = Path(args.keep) if args.keep else tmp / "clips"
        print("load average before: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
        start = time.perf_counter()
        paths = make_clips(clip_dir, args.clips, args.bitrate)
        size_mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
        print(
            f"clips: {len(paths)} x 10 s {WIDTH}x{HEIGHT} {FPS} fps H.264 ({size_mb:.1f} MB each) "
            f"+ stereo 48 kHz AAC, ready in {time.perf_counter() - start:.0f} s; "
            f"{os.cpu_count()} CPUs, {args.workers} workers"
        )
        manifest = write_bench_manifest(paths, tmp / "manifest.parquet")

        full = run_full(manifest, tmp / "features", args.workers)
        full["clips_per_s"] = full["processed"] / full["wall_s"]
        print(
            f"full preprocess: {full['processed']} clips in {full['wall_s']:.1f} s = "
            f"{full['clips_per_s']:.2f} clips/s, {full.get('steady_clips_per_s', float('nan')):.2f} clips/s "
            f"after start-up ({full['rejected']} rejected; CPU {full['cpu_s'] / max(full['processed'], 1):.2f}"
            f" s/clip incl. start-up); peak RSS: worker {full['worker_peak_rss_mib']:.0f} MiB, "
            f"ffmpeg {full['ffmpeg_peak_rss_mib']:.0f} MiB, parent {full['parent_peak_rss_mib']:.0f} MiB"
        )

        naive_paths = paths[: max(1, min(args.naive_clips, len(paths)))]
        naive = run_naive(naive_paths)
        naive["clips_per_s"] = naive["clips"] / naive["wall_s"]
        print(
            f"naive (1 process, audio only, on {naive['clips']} of {len(paths)} clips): "
            f"{naive['wall_s']:.1f} s = {naive['clips_per_s']:.3f} clips/s "
            f"({naive['wall_s'] / naive['clips']:.1f} s/clip, CPU {naive['cpu_s'] / naive['clips']:.2f} s/clip)"
        )

        floors = {}
        for reference_only in (False, True):
            key = "floor_reference_frames" if reference_only else "floor_all_frames"
            floor = run_floor(paths, args.workers, reference_only)
            floor["clips_per_s"] = floor["clips"] / floor["wall_s"]
            floors[key] = floor
            what = "reference frames only" if reference_only else "every frame"
            print(
                f"decode floor ({what}, {args.workers} at a time): {floor['wall_s']:.1f} s = "
                f"{floor['clips_per_s']:.2f} clips/s (CPU {floor['cpu_s'] / floor['clips']:.2f} s/clip)"
            )

        stages = stage_breakdown(paths, tmp / "features-inproc")
        print("one clip in one process: " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()))

        ratios = {}
        for key, rate in (("end_to_end", full["clips_per_s"]), ("steady", full.get("steady_clips_per_s"))):
            if rate:
                ratios[key] = {
                    "speedup_vs_naive": rate / naive["clips_per_s"],
                    "time_vs_floor": floors["floor_all_frames"]["clips_per_s"] / rate,
                    "time_vs_reference_floor": floors["floor_reference_frames"]["clips_per_s"] / rate,
                }
                r = ratios[key]
                print(
                    f"{key.replace('_', '-')}: speed-up over naive {r['speedup_vs_naive']:.1f}x; "
                    f"time vs decode floor {r['time_vs_floor']:.2f}x (every frame), "
                    f"{r['time_vs_reference_floor']:.2f}x (reference frames only)"
                )
        print(
            f"peak RSS per worker: {full['worker_peak_rss_mib']:.0f} MiB "
            f"(+ its ffmpeg: {full['ffmpeg_peak_rss_mib']:.0f} MiB); load average after: "
            + " ".join(f"{x:.1f}" for x in os.getloadavg())
        )
        if args.json:
            print(json.dumps({"full": full, "naive": naive, **floors, "stages": stages, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
