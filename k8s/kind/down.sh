#!/usr/bin/env bash
# Stop the port-forwards and delete the kind cluster made by up.sh.
#   k8s/kind/down.sh          (or: make kind-down)
set -euo pipefail
# shellcheck source=k8s/kind/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need kind "Install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
if [[ "$(container_engine)" == podman ]]; then
  export KIND_EXPERIMENTAL_PROVIDER=podman
fi
mkdir -p "$STATE_DIR"
stop_port_forward ui
stop_port_forward minio
if cluster_exists; then
  log "Deleting kind cluster '$CLUSTER'"
  kind delete cluster --name "$CLUSTER"
else
  log "No kind cluster '$CLUSTER'; nothing to delete"
fi
