"""End-to-end prediction on any video file: demux, features, backbones, fusion, label.

A :class:`Predictor` loads a bundle (:mod:`avsc.inference.bundle`) once and then classifies videos
of any length, resolution and channel layout:

1. The video is cut into windows of the training clip length ``clip_seconds`` (the
   feature config's ``audio.clip_seconds``): ``n = max(1, ceil(duration / clip_seconds))``
   windows, the first ``n - 1`` back to back from the start and the last one ALIGNED TO
   THE END of the video, so that no window holds padding when the video is longer than
   one clip (the last window then overlaps the one before it). A video shorter than a clip
   gives one window, padded as in training (audio with silence, video by repeating its
   last frame). A video at most 2.5 % longer than a clip counts as one clip (containers
   often report a few extra milliseconds of audio priming).
2. Each window is decoded exactly as the training data was (:func:`avsc.media.decode.demux_audio`,
   :func:`avsc.media.decode.sample_frames`) and turned into the stored features
   (:func:`avsc.features.spectrograms.compute_clip_features`), by
   :func:`avsc.inference.windows.decode_windows`.
3. The windows of a video go through each backbone together (in batches of at most
   ``max_batch_windows``); each backbone gives its ``fc1024`` or ``fc10`` embedding (a
   visual backbone's is the mean over the window's frames), the fusion model turns them
   into logits, divided by the model's calibration temperature (``bundle.json``) before the
   softmax, and the video's probabilities are the mean of its windows' calibrated
   probabilities.

The file is probed once (:func:`avsc.media.probe.probe_media`): every window is decoded
from the audio track and video stream a player presents, on the player's timeline, over
the whole recording (the later end of picture and sound; past the end of the shorter one
a player's silence or last frame).

A video without an audio track, or whose sound is digital silence in every window, raises
:class:`avsc.errors.MediaError` naming the file, unless the predictor was loaded with
``allow_visual_only=True`` and the bundle holds a visual-only fusion model: then that
model classifies the video from its pictures alone (``Prediction.modalities ==
"visual"``). A window whose sound alone is silent (a track that ends early) is left out of
the average, with a warning. Audio embeddings are never invented: the models never saw
silence in training (preprocessing rejects silent clips).

Example::

    predictor = Predictor.load("bundle")
    prediction = predictor.predict_file("street.mp4")
    prediction.label, prediction.windows  # ('street_traffic', 3)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from avsc.config import AUDIO_BACKBONES, BACKBONE_FEATURE
from avsc.errors import AvscError, DataError, MediaError
from avsc.inference.bundle import Bundle, load_bundle
from avsc.inference.graph_runner import GraphRunner
from avsc.inference.prediction import Prediction
from avsc.inference.windows import decode_windows, silent_windows, window_offsets
from avsc.media.probe import MediaInfo
from avsc.records import BundleFusion

log = logging.getLogger(__name__)


class Predictor:
    """The bundle's models, loaded once, applied to as many videos as needed.

    Use :meth:`load`; the constructor takes already-loaded models.
    """

    def __init__(
        self,
        bundle: Bundle,
        embedding_models: dict[str, Any],
        fusion_models: dict[str, Any],
        *,
        allow_visual_only: bool = False,
        max_batch_windows: int = 8,
        graph: bool = True,
    ):
        self.bundle = bundle
        self.embedding_models = embedding_models
        self.fusion_models = fusion_models  # "fusion" and, if bundled, "visual_fusion"
        # The fusion models up to their logits, so the bundle's temperature can be applied.
        from avsc.models.fusion import fusion_logits_model, model_standardization

        self._fusion_logits = {key: fusion_logits_model(m) for key, m in fusion_models.items()}
        self._standardize = {key: model_standardization(m) for key, m in fusion_models.items()}
        self._provenance_logged = False
        self.allow_visual_only = allow_visual_only
        self.max_batch_windows = max(1, int(max_batch_windows))
        self.graph = graph
        # Graph functions: traced on the first video (a few seconds), then about twice as
        # fast as running the models op by op; worth it from the second video on.
        self._runners = {b: GraphRunner(m) if graph else m for b, m in embedding_models.items()}

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        *,
        allow_visual_only: bool = False,
        verify: bool = True,
        max_batch_windows: int = 8,
        graph: bool = True,
    ) -> Predictor:
        """Verify a bundle and load its models (once, for every later prediction).

        Args:
            bundle_dir: a folder written by :func:`avsc.inference.bundle_writer.make_bundle`, or an
                ``s3://`` prefix holding one (fetched once into a temporary folder).
            allow_visual_only: classify videos without an audio track with the bundle's
                visual-only fusion model (if it has one) instead of failing.
            verify: check the bundle's checksums first.
            max_batch_windows: most windows sent through a backbone at once (bounds memory
                on long videos).
            graph: run the backbones as traced graph functions (faster from the second
                video on) rather than op by op (no tracing: better for one short video).

        Raises:
            DataError: not a bundle, a missing or modified file, or a model that will not load.
        """
        import keras

        import avsc.models.backbones  # registers the backbones' custom layers

        _import_fusion_layers()

        from avsc.storage import staging

        def load_model(path: Path) -> Any:
            try:
                return keras.models.load_model(path, compile=False)
            except Exception as exc:  # noqa: BLE001 -- Keras raises many kinds for an unreadable file
                raise DataError(
                    path,
                    f"cannot load the model ({type(exc).__name__}: {exc})",
                    "copy the bundle again, or rebuild it with `avsc bundle`",
                ) from None

        with staging.local_copy(bundle_dir) as local:  # an s3:// bundle is fetched once, then held in memory
            bundle = load_bundle(local, verify=verify)
            entries = {"fusion": bundle.fusion}
            if bundle.visual_fusion is not None:
                entries["visual_fusion"] = bundle.visual_fusion
            needed = {b for entry in entries.values() for b in entry.backbones}
            backbones = avsc.models.backbones
            embedding_models = {
                b: backbones.depthwise_for_grouped(backbones.embedding_model(load_model(p)))
                for b, p in bundle.backbones.items()
                if b in needed
            }
            fusion_models = {key: load_model(bundle.model_path(entry)) for key, entry in entries.items()}
        return cls(
            bundle,
            embedding_models,
            fusion_models,
            allow_visual_only=allow_visual_only,
            max_batch_windows=max_batch_windows,
            graph=graph,
        )

    # --- the steps, each usable on its own --------------------------------------------

    def choose_fusion(self, path: str | Path, has_audio: bool, problem: str = "no audio track") -> BundleFusion:
        """The fusion model for a video with (or without) usable sound; ``problem`` says why not."""
        main = self.bundle.fusion
        needs_audio = any(b in AUDIO_BACKBONES for b in main.backbones)
        if has_audio or not needs_audio:
            return main
        visual = self.bundle.visual_fusion
        if self.allow_visual_only and visual is not None:
            return visual
        if self.allow_visual_only:
            hint = (
                "this bundle has no visual-only fusion model; rebuild it with "
                "`avsc bundle ... --visual-fusion VISUAL_FUSION_DIR`"
            )
        elif visual is not None:
            hint = "use --allow-visual-only to classify it from its pictures alone"
        else:
            hint = (
                f"the {main.modalities} fusion model needs sound; add a visual-only fusion model "
                "to the bundle (`avsc bundle --visual-fusion`) and use --allow-visual-only"
            )
        raise MediaError(path, problem, hint)

    def window_features(
        self, path: str | Path, offsets: Iterable[float], entry: BundleFusion, info: MediaInfo | None = None
    ) -> dict[str, np.ndarray]:
        """Features of each window, stacked: feature name -> [shape=(n_windows, ...)].

        Only the features ``entry``'s backbones read are returned. ``info`` is the file's
        probe (probed now if not given).
        """
        from avsc.media.probe import probe_media

        info = info or probe_media(path)
        features = sorted({BACKBONE_FEATURE[b] for b in entry.backbones})
        out = decode_windows(path, offsets, features, self.bundle.feature_config, self.bundle.clip_seconds, info)
        for name, array in out.items():
            expected = self.bundle.feature_shapes.get(name)
            if expected is not None and tuple(array.shape[1:]) != tuple(expected):
                raise DataError(
                    self.bundle.root,
                    f"{name} features of {path} have shape {array.shape[1:]}, "
                    f"the bundled backbones expect {tuple(expected)}",
                    "the feature code differs from the one the models were trained with",
                )
        return out

    def predict_features(self, features: dict[str, np.ndarray], entry: BundleFusion | None = None) -> np.ndarray:
        """Class probabilities of a batch of windows.

        Args:
            features: feature name -> [shape=(n, ...)] as :meth:`window_features` gives.
            entry: the fusion model to use (default: the bundle's main one).

        Returns:
            [shape=(n, 10), float64] calibrated probabilities (``softmax(logits / T)``, ``T``
            of ``entry``), rows summing to 1, labels in alphabetical order.
        """
        return self._predict_windows(features, entry)[0]

    def _predict_windows(
        self, features: dict[str, np.ndarray], entry: BundleFusion | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_features` and each window's distance from the training data
        ([shape=(n,)], NaN for a fusion model without standardisation)."""
        from avsc.models.fusion import distance_score
        from avsc.scoring.calibration import calibrated_probabilities
        from avsc.training.embeddings import embed_arrays

        entry = entry or self.bundle.fusion
        key = "fusion" if entry is self.bundle.fusion else "visual_fusion"
        inputs = []
        for backbone in entry.backbones:
            fc1024, fc10 = embed_arrays(backbone, self._runners[backbone], features[BACKBONE_FEATURE[backbone]])
            inputs.append(fc1024 if entry.level == "fc1024" else fc10)
        logits = np.asarray(self._fusion_logits[key](inputs, training=False), dtype=np.float64)
        standardize = self._standardize[key]
        distance = distance_score(inputs, standardize) if standardize else np.full(len(logits), np.nan)
        return calibrated_probabilities(logits, entry.temperature), distance

    def predict_file(self, path: str | Path) -> Prediction:
        """Classify one video.

        Raises:
            MediaError: the file is missing, not a readable video, or has no audio track
                (unless visual-only prediction is allowed and possible); names the file.
        """
        from avsc.media.probe import probe_media
        from avsc.storage import locations

        if not locations.is_remote(str(path)):  # an s3:// video is decoded in place
            path = Path(path)
            if not path.is_file():
                raise MediaError(
                    path, "not found" if not path.exists() else "not a file", "give the path of a video file"
                )
        info = probe_media(path)
        warnings = list(info.warnings)
        offsets = window_offsets(info.duration_s, self.bundle.clip_seconds)
        entry = self.choose_fusion(path, info.has_audio)
        if any(b in AUDIO_BACKBONES for b in entry.backbones):
            config, clip = self.bundle.feature_config, self.bundle.clip_seconds
            silent = silent_windows(path, offsets, config.audio, clip, info)
            if len(silent) == len(offsets):
                entry = self.choose_fusion(
                    path,
                    False,
                    f"the sound (audio track {info.audio_track}) is digital silence throughout (peak below -90 dBFS)",
                )
                warnings.append("the sound is digital silence throughout: classified from the pictures alone")
            elif silent:
                warnings.append(
                    f"{len(silent)} of {len(offsets)} windows left out: their sound is digital "
                    f"silence (at {', '.join(f'{o:g}' for o in silent)} s)"
                )
                offsets = [o for o in offsets if o not in silent]
        for warning in warnings:
            log.warning("%s: %s", path, warning)
        parts, distances = [], []
        for start in range(0, len(offsets), self.max_batch_windows):
            chunk = offsets[start : start + self.max_batch_windows]
            probs, window_distances = self._predict_windows(self.window_features(path, chunk, entry, info), entry)
            parts.append(probs)
            distances.append(window_distances)
        window_probs = np.concatenate(parts)
        mean = window_probs.mean(axis=0)
        distance = float(np.concatenate(distances).mean())
        threshold = float(entry.val_distance_quantiles.get("0.99", np.nan))
        # The bundle's own warnings go into every result but into the log once.
        provenance = self.bundle.provenance_warnings()
        if not self._provenance_logged:
            for warning in provenance:
                log.warning("%s: %s", self.bundle.root, warning)
            self._provenance_logged = True
        if distance > threshold:
            far = (
                f"far from the training data: distance {distance:.2f} is above the 99th percentile of the "
                f"val clips ({threshold:.2f}); the probabilities may not hold for this video"
            )
            log.warning("%s: %s", path, far)
            provenance.append(far)
        warnings += provenance
        labels = self.bundle.labels
        return Prediction(
            path=str(path),
            label=labels[int(mean.argmax())],
            probabilities={label: float(p) for label, p in zip(labels, mean, strict=True)},
            windows=len(offsets),
            modalities=entry.modalities,
            method=entry.method,
            window_offsets=tuple(offsets),
            window_probabilities=tuple(tuple(float(p) for p in row) for row in window_probs),
            warnings=tuple(warnings),
            distance=distance,
            distance_threshold=threshold,
            provenance=dataclasses.asdict(self.bundle.info.provenance),
        )

    def predict_files(
        self, paths: Iterable[str | Path], *, progress: bool = False
    ) -> Iterator[tuple[str, Prediction | str]]:
        """Classify videos one after another, carrying on past bad files.

        Every per-file failure, expected or not, becomes that file's message and the
        next file is classified.

        Yields:
            ``(path, Prediction)`` or, for a file that cannot be classified,
            ``(path, message)`` where the message names the file and the problem.
        """
        from tqdm import tqdm

        paths = [str(p) for p in paths]
        for path in tqdm(paths, desc="predict", unit="video", disable=not progress):
            try:
                yield path, self.predict_file(path)
            except AvscError as exc:
                yield path, str(exc)
            except OSError as exc:
                yield path, f"{path}: {exc.strerror or exc}"
            except MemoryError:
                yield path, f"{path}: out of memory while classifying it"
            except Exception as exc:  # one bad file never stops a batch
                log.exception("unexpected error on %s", path)
                yield (
                    path,
                    (
                        f"{path}: an unexpected error stopped its classification ({type(exc).__name__}: "
                        f"{exc}); the log has the traceback"
                    ),
                )


def check_videos(paths: Iterable[str | Path]) -> dict[str, str]:
    """The videos of ``paths`` that cannot be classified, found without loading any model.

    Each is checked as classifying it would first: it exists and is a file (an ``s3://``
    object: the store's settings are present and the object exists) and ffmpeg reads it as
    media with a video stream. A fraction of a second per file, where loading a bundle's
    models takes 10-40 s.

    Returns:
        path -> the message naming the file and what is wrong (empty when every one is fine).
    """
    from avsc.media.ffmpeg import FFmpegCrash
    from avsc.media.probe import probe_media

    problems: dict[str, str] = {}
    for path in map(str, paths):
        try:
            probe_media(path)
        except (AvscError, FFmpegCrash) as exc:
            problems[path] = str(exc) if path in str(exc) else f"{path}: {exc}"
        except OSError as exc:
            problems[path] = f"{path}: {exc.strerror or exc}"
    return problems


def _import_fusion_layers() -> None:
    """Register the fusion layers with Keras before a fusion model is loaded."""
    import avsc.models.fusion  # noqa: F401


__all__ = ["Predictor", "check_videos"]
