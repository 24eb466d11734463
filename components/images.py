"""The container images the pipeline's steps run in, pinned to an exact release tag.

Both are built from ``docker/`` (``make images``) with the avsc wheel, TensorFlow, ffmpeg and
kfp installed, so every component is a lightweight Python component whose body imports
``avsc``. Change the tag here (and in ``docker/``) when releasing new images, or pin by digest
(``ghcr.io/avsc/avsc-cpu@sha256:...``) once pushed.
"""

CPU_IMAGE = "ghcr.io/avsc/avsc-cpu:0.1.0"
GPU_IMAGE = "ghcr.io/avsc/avsc-gpu:0.1.0"

__all__ = ["CPU_IMAGE", "GPU_IMAGE"]
