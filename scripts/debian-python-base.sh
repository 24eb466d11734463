#!/usr/bin/env bash
# Make a Python 3.11 base image from Debian bookworm packages, for builds where Docker Hub (and
# so the default python:3.11-slim-bookworm base) cannot be reached but a Debian mirror can.
#   sudo scripts/debian-python-base.sh [IMAGE]        (or: make debian-base)
#   make images BASE_IMAGE=localhost/avsc-python:3.11-bookworm
# IMAGE defaults to localhost/avsc-python:3.11-bookworm. Needs root, debootstrap and podman,
# buildah or docker (whichever answers; CONTAINER_ENGINE= picks one). Settings (environment):
# DEBIAN_MIRROR (default http://deb.debian.org/debian), DEBIAN_SNAPSHOT (a snapshot.debian.org
# time stamp such as 20250520T000000Z: the same packages on every build).
#
# The image has what the avsc Dockerfiles expect of a Python base: `python`, `python3` and
# `pip` on PATH (a virtual environment in /opt/python, so pip never touches Debian's own
# packages), apt with the same mirror, groupadd/useradd, CA certificates, and UTF-8.
set -euo pipefail

IMAGE="${1:-localhost/avsc-python:3.11-bookworm}"
SUITE=bookworm
if [[ -n "${DEBIAN_SNAPSHOT:-}" ]]; then
  MIRROR="http://snapshot.debian.org/archive/debian/$DEBIAN_SNAPSHOT"
else
  MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
fi
PACKAGES=python3,python3-venv,ca-certificates,tzdata

die() { printf 'error: %s\n' "$*" >&2; exit 1; }
log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

[[ "$(id -u)" == 0 ]] || die "debootstrap needs root; run with sudo"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found; install it (apt-get install debootstrap)"

engine="${CONTAINER_ENGINE:-}"
if [[ -z "$engine" ]]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v podman >/dev/null 2>&1; then
    engine=podman
  elif command -v buildah >/dev/null 2>&1; then
    engine=buildah
  else
    die "no container engine answers: start docker, or install podman or buildah"
  fi
fi

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/avsc-base.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT

log "debootstrap $SUITE from $MIRROR into $rootfs"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR"

log "Python virtual environment /opt/python (pip, setuptools, wheel from Debian's ensurepip)"
chroot "$rootfs" /usr/bin/python3 -m venv /opt/python
chroot "$rootfs" /opt/python/bin/python -c "import ssl, sqlite3, venv; print('python', __import__('sys').version)"

log "Cleaning apt lists, logs and caches"
cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
SOURCES
# Like the Debian images on Docker Hub: no recommends, no caches kept.
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
  >"$rootfs/etc/apt/apt.conf.d/90avsc-no-recommends"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
  "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.cache
find "$rootfs/opt/python" -name __pycache__ -type d -prune -exec rm -rf {} +

changes=(
  --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  --change 'ENV LANG=C.UTF-8'
  --change 'ENV VIRTUAL_ENV=/opt/python'
  --change 'CMD ["python3"]'
)
log "Importing the file system as $IMAGE with $engine"
case "$engine" in
  docker | podman)
    tar -C "$rootfs" --numeric-owner -c . | "$engine" import "${changes[@]}" - "$IMAGE" ;;
  buildah)
    archive="$rootfs.tar"
    tar -C "$rootfs" --numeric-owner -cf "$archive" .
    container="$(buildah from scratch)"
    buildah add "$container" "$archive" /
    buildah config --env PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env LANG=C.UTF-8 --env VIRTUAL_ENV=/opt/python --cmd python3 "$container"
    buildah commit --rm "$container" "$IMAGE"
    rm -f "$archive" ;;
  *) die "unknown CONTAINER_ENGINE '$engine' (docker, podman or buildah)" ;;
esac
"$engine" images "$IMAGE" 2>/dev/null || true
log "Done: make images BASE_IMAGE=$IMAGE"
