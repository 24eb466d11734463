# syntax=docker/dockerfile:1
# avsc CPU image: ingest, preprocess, fusion and evaluation steps of the pipeline.
#   docker build -f docker/cpu.Dockerfile -t ghcr.io/avsc/avsc-cpu:0.1.0 .
# The base is pinned by digest; build from another base with --build-arg BASE_IMAGE=...
# (refresh the digest with `make pin-bases`).
ARG BASE_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

# ---- builder: turn the repository into a wheel (no compilers end up in the runtime image)
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
LABEL org.opencontainers.image.title="avsc-cpu" \
      org.opencontainers.image.description="Audio-visual scene classification: CPU pipeline steps" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KERAS_HOME=/opt/keras \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MPLCONFIGDIR=/tmp/matplotlib

# avsc with TensorFlow's CPU build and kfp (the pipeline extra), so the
# pipeline's lightweight components run here without installing anything at run time.
# ffmpeg comes from the imageio-ffmpeg wheel.
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir "/wheels/avsc-${VERSION}-py3-none-any.whl[cpu,pipeline]" \
    && rm -rf /wheels \
    && python -c "import avsc, kfp, imageio_ffmpeg; print('avsc', avsc.__version__, 'kfp', kfp.__version__, imageio_ffmpeg.get_ffmpeg_exe())"

# ImageNet weights for the visual backbones, fetched now so no step downloads at run time.
COPY docker/fetch_weights.py /opt/avsc/fetch_weights.py
RUN python /opt/avsc/fetch_weights.py && chmod -R a+rX /opt/keras

RUN groupadd --system --gid 10001 avsc \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/avsc avsc
USER 10001:10001
WORKDIR /home/avsc
CMD ["avsc", "--help"]
