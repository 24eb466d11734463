#!/usr/bin/env bash
# Build the avsc images with docker or podman, whichever answers, and print their sizes.
#   scripts/build-images.sh [cpu] [gpu]          (or: make images [FLAVOURS=cpu])
# Settings (environment):
#   REGISTRY, VERSION   image names: $REGISTRY/avsc-<flavour>:$VERSION (default ghcr.io/avsc, src/avsc/_version.py)
#   CONTAINER_ENGINE    docker or podman (default: the one that answers)
#   BASE_IMAGE          Python 3.11 bookworm base, fully qualified (default: the Dockerfiles' pinned one;
#                       scripts/debian-python-base.sh makes one from Debian packages)
#   WEIGHTS_DIR         folder with the ImageNet weights files to bake in (no download at build)
#   PYPI_MIRROR         index URL pip installs from inside the build (default PyPI)
#   CA_BUNDLE           CA bundle for pip and downloads inside the build (a TLS-inspecting proxy);
#                       passed as the build secret `ca-bundle`, never stored in the image
#   SOURCE, REVISION    OCI labels (default: git remote and commit)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/container-engine.sh
source "$ROOT/scripts/container-engine.sh"
cd "$ROOT"

REGISTRY="${REGISTRY:-ghcr.io/avsc}"
VERSION="${VERSION:-$(sed -n 's/^__version__ = "\(.*\)"/\1/p' src/avsc/_version.py | head -n 1)}"
SOURCE="${SOURCE:-$(git remote get-url origin 2>/dev/null || echo https://github.com/avsc/avsc)}"
REVISION="${REVISION:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
flavours=("$@")
[[ ${#flavours[@]} -gt 0 ]] || flavours=(cpu gpu)
engine="$(container_engine)"

# docker/weights/ is what the build sees: exactly the files of WEIGHTS_DIR, or none (download).
names=(inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5 convnext_tiny_notop.h5)
rm -f docker/weights/*.h5
if [[ -n "${WEIGHTS_DIR:-}" ]]; then
  for name in "${names[@]}"; do
    [[ -f "$WEIGHTS_DIR/$name" ]] || { echo "error: WEIGHTS_DIR=$WEIGHTS_DIR has no $name" >&2; exit 1; }
    install -m 0644 "$WEIGHTS_DIR/$name" docker/weights/  # world-readable: any UID reads them
  done
fi
trap 'rm -f docker/weights/*.h5' EXIT

args=(--build-arg "VERSION=$VERSION" --build-arg "SOURCE=$SOURCE" --build-arg "REVISION=$REVISION")
[[ -z "${BASE_IMAGE:-}" ]] || args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[[ -z "${PYPI_MIRROR:-}" ]] || args+=(--build-arg "PYPI_MIRROR=$PYPI_MIRROR")
if [[ -n "${CA_BUNDLE:-}" ]]; then
  [[ -f "$CA_BUNDLE" ]] || { echo "error: CA_BUNDLE=$CA_BUNDLE is not a file" >&2; exit 1; }
  args+=(--secret "id=ca-bundle,src=$CA_BUNDLE")
fi
[[ "$engine" != docker ]] || export DOCKER_BUILDKIT=1  # build secrets need BuildKit

summary=()
for flavour in "${flavours[@]}"; do
  [[ -f "docker/$flavour.Dockerfile" ]] || { echo "error: no docker/$flavour.Dockerfile" >&2; exit 1; }
  image="$REGISTRY/avsc-$flavour:$VERSION"
  printf '\033[1m==> %s (%s, base %s)\033[0m\n' "$image" "$engine" "${BASE_IMAGE:-the Dockerfile default}"
  began=$SECONDS
  "$engine" build -f "docker/$flavour.Dockerfile" "${args[@]}" -t "$image" .
  bytes="$("$engine" image inspect --format '{{.Size}}' "$image")"
  summary+=("$(awk -v image="$image" -v bytes="$bytes" -v seconds=$((SECONDS - began)) \
    'BEGIN { printf "%-40s %6.2f GB  built in %d s", image, bytes / 1e9, seconds }')")
done
printf '%s\n' "${summary[@]}"
