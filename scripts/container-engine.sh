# shellcheck shell=bash
# container_engine: print the container engine that answers (sourced, not run).
# CONTAINER_ENGINE=docker|podman chooses one; otherwise docker when its daemon answers, else
# podman (daemonless). A docker client without a daemon (common on CI runners and laptops with
# Docker Desktop stopped) is not taken.
container_engine() {
  if [[ -n "${CONTAINER_ENGINE:-}" ]]; then
    command -v "$CONTAINER_ENGINE" >/dev/null 2>&1 \
      || { echo "error: CONTAINER_ENGINE=$CONTAINER_ENGINE not found on PATH" >&2; return 1; }
    echo "$CONTAINER_ENGINE"
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null 2>&1; then
    echo podman
  else
    echo "error: no container engine answers: start the docker daemon, or install podman" >&2
    return 1
  fi
}
