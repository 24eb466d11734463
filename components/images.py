"""The container images the pipeline's steps run in, pinned to an exact release tag.

Both are built from ``docker/`` (``make images``) with the avsc wheel, TensorFlow, ffmpeg and
kfp installed, so every component is a lightweight Python component whose body imports
``avsc``. Change the tag here (and in ``docker/``) when releasing new images, or pin by digest
(``ghcr.io/avsc/avsc-cpu@sha256:...``) once pushed.
"""

CPU_IMAGE = "ghcr.io/avsc/avsc-cpu:0.1.0"
GPU_IMAGE = "ghcr.io/avsc/avsc-gpu:0.1.0"


def resolve_image(image: str, *, registry: str | None = None, gpu: bool = True) -> str:
    """The image a step whose component names ``image`` runs in: the CPU image instead of the
    GPU one when ``gpu`` is False (``--no-gpu``: clusters without GPUs, such as kind, need only
    the CPU image), then the same name and tag under ``registry`` when one is given."""
    if not gpu and image == GPU_IMAGE:
        image = CPU_IMAGE
    if registry:
        image = f"{registry.rstrip('/')}/{image.rsplit('/', 1)[-1]}"
    return image


__all__ = ["CPU_IMAGE", "GPU_IMAGE", "resolve_image"]
