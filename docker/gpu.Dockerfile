# syntax=docker/dockerfile:1
# avsc GPU image: backbone training and embedding export (TensorFlow with CUDA).
#   docker build -f docker/gpu.Dockerfile -t ghcr.io/avsc/avsc-gpu:0.1.0 .
# TensorFlow's `and-cuda` extra brings the CUDA and cuDNN user-space libraries as wheels that
# match the TensorFlow build exactly, so a plain Python base is enough: the node only needs
# the NVIDIA driver and the device plugin. The base is pinned by digest; build from another
# base with --build-arg BASE_IMAGE=... (refresh the digest with `make pin-bases`).
ARG BASE_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

# ---- builder: turn the repository into a wheel
FROM ${BASE_IMAGE} AS builder
WORKDIR /build
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- runtime
FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/avsc/avsc
ARG REVISION=unknown
LABEL org.opencontainers.image.title="avsc-gpu" \
      org.opencontainers.image.description="Audio-visual scene classification: GPU training and embedding steps" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KERAS_HOME=/opt/keras \
    TF_CPP_MIN_LOG_LEVEL=2 \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    MPLCONFIGDIR=/tmp/matplotlib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir "/wheels/avsc-${VERSION}-py3-none-any.whl[gpu,pipeline]" \
    && rm -rf /wheels \
    && python -c "import avsc, kfp, imageio_ffmpeg; print('avsc', avsc.__version__, 'kfp', kfp.__version__, imageio_ffmpeg.get_ffmpeg_exe())"

# ImageNet weights for the visual backbones, fetched now so training never downloads them.
COPY docker/fetch_weights.py /opt/avsc/fetch_weights.py
RUN python /opt/avsc/fetch_weights.py && chmod -R a+rX /opt/keras

RUN groupadd --system --gid 10001 avsc \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/avsc avsc
USER 10001:10001
WORKDIR /home/avsc
CMD ["avsc", "--help"]
