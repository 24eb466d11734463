# avsc CPU image: ingest, preprocess, fusion, evaluation and publish steps of the pipeline (and,
# in a --no-gpu run, every step).
#   make images                       (docker or podman, whichever answers; see docs/cluster.md)
#   docker build -f docker/cpu.Dockerfile -t ghcr.io/avsc/avsc-cpu:0.1.0 .
# Build ARGs: BASE_IMAGE (a Python 3.11 image on Debian bookworm, fully qualified and pinned by
# digest; `make debian-base` makes one from Debian packages where Docker Hub is out of reach),
# PYPI_MIRROR (index URL of a PyPI mirror), VERSION, SOURCE, REVISION (labels). Build secret
# `ca-bundle` (optional): a CA bundle for pip and the weights download behind a TLS-inspecting
# proxy; it never lands in a layer.
# The ImageNet weights are taken from docker/weights/ when there (`make images WEIGHTS_DIR=...`),
# else downloaded. No remote BuildKit frontend: the Dockerfile syntax built into the engine.
ARG BASE_IMAGE=docker.io/library/python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

# ---- builder: turn the repository into a wheel (no build tools end up in the runtime image)
FROM ${BASE_IMAGE} AS builder
ARG PYPI_MIRROR=
WORKDIR /build
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && pip wheel --no-cache-dir --no-deps ${PYPI_MIRROR:+--index-url "$PYPI_MIRROR"} --wheel-dir /wheels .

# ---- runtime: layers ordered from the least to the most often changed
FROM ${BASE_IMAGE}
ARG PYPI_MIRROR=

# Runs as any UID with a read-only root file system: everything written at run time goes
# under /tmp (mount a writable /tmp: an emptyDir on Kubernetes, --tmpfs /tmp with docker).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    AVSC_FFMPEG=/usr/bin/ffmpeg \
    AVSC_WEIGHTS_DIR=/opt/avsc/weights \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    NUMBA_CPU_NAME=generic \
    AVSC_NUMBA_CACHE_SEED=/opt/avsc/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib

# Debian's ffmpeg decodes what the static imageio-ffmpeg build can crash on (MPEG-TS on some
# CPUs). Not pinned to a version: Debian's security updates replace it within bookworm.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/* \
    && "$AVSC_FFMPEG" -hide_banner -loglevel error -version >/dev/null

# avsc's dependencies with TensorFlow's CPU build and the pipeline extra (kfp), read from
# pyproject.toml: this large layer is rebuilt only when the dependencies change, not with every
# change of the code. With kfp here the pipeline's lightweight components install nothing.
COPY pyproject.toml /tmp/avsc/pyproject.toml
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && python -c 'import sys, tomllib; p = tomllib.load(open(sys.argv[1], "rb"))["project"]; print("\n".join(p["dependencies"] + [r for e in sys.argv[2:] for r in p["optional-dependencies"][e]]))' \
       /tmp/avsc/pyproject.toml cpu pipeline >/tmp/avsc/requirements.txt \
    && pip install --no-cache-dir ${PYPI_MIRROR:+--index-url "$PYPI_MIRROR"} -r /tmp/avsc/requirements.txt \
    && rm -rf /tmp/avsc

# ImageNet weights of the visual backbones (checked or downloaded below, with avsc installed).
COPY docker/weights/ /opt/avsc/weights/

# avsc itself, without dependencies (all installed above; pip check proves it).
ARG VERSION=0.1.0
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir --no-deps "/wheels/avsc-${VERSION}-py3-none-any.whl" \
    && rm -rf /wheels \
    && pip check \
    && python -c "import avsc, kfp; print('avsc', avsc.__version__, 'kfp', kfp.__version__)"

# librosa's numba kernels compiled once here, for a generic x86-64 CPU (NUMBA_CPU_NAME above:
# valid on any node), and copied into each container's empty /tmp/numba-cache when avsc starts
# (avsc.runtime.seed_numba_cache): a preprocessing pod starts in seconds, not after ~16 s of
# compilation. Rebuilt with the code, as the kernels belong to this librosa.
RUN NUMBA_CACHE_DIR="$AVSC_NUMBA_CACHE_SEED" python -c "from avsc.features.clip_workers import warm_up; print(f'numba kernels compiled in {warm_up():.1f} s')" \
    && chmod -R a+rX "$AVSC_NUMBA_CACHE_SEED" \
    && rm -rf /tmp/* /tmp/.[!.]* /root/.cache /root/.config

# The weights are read by path at run time (avsc.models.pretrained), whatever the user. Files
# given in docker/weights/ are checked and kept; missing ones are downloaded now, so no step
# downloads them. Only files not yet world-readable are chmod-ed (a blanket chmod would copy
# 200 MB of weights into another layer). /tmp is left empty (no root-owned caches).
COPY docker/fetch_weights.py /opt/avsc/fetch_weights.py
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export SSL_CERT_FILE=/run/secrets/ca-bundle; fi \
    && python /opt/avsc/fetch_weights.py --into "$AVSC_WEIGHTS_DIR" \
    && find /opt/avsc ! -perm -a+r -exec chmod a+rX {} + \
    && rm -rf /tmp/* /tmp/.[!.]* /root/.keras /root/.cache /root/.config

RUN groupadd --system --gid 10001 avsc \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/avsc avsc
USER 10001:10001
WORKDIR /home/avsc
CMD ["avsc", "--help"]

# Labels last: a new revision does not invalidate the layers above.
ARG SOURCE=https://github.com/avsc/avsc
ARG REVISION=unknown
LABEL org.opencontainers.image.title="avsc-cpu" \
      org.opencontainers.image.description="Audio-visual scene classification: CPU pipeline steps" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
