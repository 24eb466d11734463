#!/usr/bin/env bash
# Re-resolve the digest of every pinned third-party image and rewrite it in place.
#   scripts/pin-images.sh          (or: make pin-bases)
# Needs one of: docker (buildx), skopeo, crane, and network access to the registries.
# Review the diff afterwards; nothing is committed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# file|image reference without digest (the tag stays; only the digest after it changes)
PINS=(
  "docker/cpu.Dockerfile|docker.io/library/python:3.11.13-slim-bookworm"
  "docker/gpu.Dockerfile|docker.io/library/python:3.11.13-slim-bookworm"
  "k8s/kind/cluster.yaml|kindest/node:v1.33.1"
  "k8s/minio/minio.yaml|quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"
  "k8s/gpu/nvidia-device-plugin.yaml|nvcr.io/nvidia/k8s-device-plugin:v0.17.1"
)

digest_of() {
  local ref="$1"
  if command -v docker >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1; then
    docker buildx imagetools inspect "$ref" --format '{{json .Manifest.Digest}}' | tr -d '"'
  elif command -v skopeo >/dev/null 2>&1; then
    skopeo inspect --format '{{.Digest}}' "docker://$ref"
  elif command -v crane >/dev/null 2>&1; then
    crane digest "$ref"
  else
    echo "error: need docker buildx, skopeo or crane to resolve image digests" >&2
    return 1
  fi
}

for pin in "${PINS[@]}"; do
  file="$ROOT/${pin%%|*}"
  ref="${pin#*|}"
  digest="$(digest_of "$ref")"
  [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "error: bad digest '$digest' for $ref" >&2; exit 1; }
  escaped="$(printf '%s' "$ref" | sed 's/[.[\*^$/]/\\&/g')"
  sed -i -E "s/(${escaped})@sha256:[0-9a-f]{64}/\1@${digest}/g" "$file"
  echo "$ref@$digest  ->  ${pin%%|*}"
done
