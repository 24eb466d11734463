#!/usr/bin/env bash
# Smoke-check avsc images as a cluster runs them: read-only root file system, no network, no
# capabilities, as the image's own user and as an arbitrary UID (OpenShift style, group 0).
#   scripts/check-image.sh IMAGE...          (or: make check-images)
# Inside (docker/smoke_check.py, fed on stdin): the baked ImageNet weights resolve by path and
# load, every avsc command starts, a tiny preprocess with 2 workers completes. Also checks that
# the image leaves /tmp empty (nothing root-owned for other users to trip on).
# Settings (environment): CONTAINER_ENGINE, CHECK_UID (default 4242:0).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/container-engine.sh
source "$ROOT/scripts/container-engine.sh"
[[ $# -gt 0 ]] || { echo "usage: $0 IMAGE..." >&2; exit 2; }
engine="$(container_engine)"
locked=(--rm --read-only --tmpfs "/tmp:rw,nosuid,nodev,mode=1777" --network none --cap-drop ALL
        --security-opt no-new-privileges)

for image in "$@"; do
  printf '\033[1m==> %s (%s)\033[0m\n' "$image" "$engine"
  leftovers="$("$engine" run --rm --network none --entrypoint /bin/sh "$image" -c 'ls -A /tmp')"
  [[ -z "$leftovers" ]] || { echo "FAIL $image leaves files in /tmp: $leftovers" >&2; exit 1; }
  echo "ok  /tmp is empty in the image"
  for user in "" "${CHECK_UID:-4242:0}"; do
    began=$SECONDS
    echo "--- as ${user:-the image user}"
    "$engine" run -i "${locked[@]}" ${user:+--user "$user"} "$image" python - <"$ROOT/docker/smoke_check.py"
    echo "--- passed in $((SECONDS - began)) s"
  done
done
