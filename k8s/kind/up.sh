#!/usr/bin/env bash
# Create a kind cluster with Kubeflow Pipelines 2.17.0 standalone, MinIO as the avsc object
# store, the avsc run settings and the avsc CPU image (GPU=1: the GPU image too), then
# port-forward the KFP UI.
#   k8s/kind/up.sh            (or: make kind-up; build the image first: make images FLAVOURS=cpu)
set -euo pipefail
# shellcheck source=k8s/kind/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
check_prerequisites

# The kind scripts submit with --no-gpu, which runs every step in the CPU image: the GPU image
# (several GB more in the node) is loaded only when asked for.
images=("$REGISTRY/avsc-cpu:$VERSION")
flavours=cpu
if [[ "${GPU:-0}" == 1 ]]; then
  images+=("$REGISTRY/avsc-gpu:$VERSION")
  flavours="cpu gpu"
fi
for image in "${images[@]}"; do
  "$ENGINE" image inspect "$image" >/dev/null 2>&1 \
    || die "image $image not found in $ENGINE; build it first: make images FLAVOURS='$flavours' REGISTRY=$REGISTRY"
done

if cluster_exists; then
  log "kind cluster '$CLUSTER' already exists; reusing it"
else
  log "Creating kind cluster '$CLUSTER'"
  kind create cluster --name "$CLUSTER" --config "$ROOT/k8s/kind/cluster.yaml" --wait 120s
fi

log "Installing Kubeflow Pipelines 2.17.0 (cluster-scoped resources)"
kc apply -k "$ROOT/k8s/kfp/cluster-scoped"
kc wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kc wait --for condition=established --timeout=120s crd/workflows.argoproj.io

log "Installing Kubeflow Pipelines 2.17.0 (platform-agnostic)"
kc apply -k "$ROOT/k8s/kfp/platform"
for deployment in mysql metadata-grpc-deployment ml-pipeline ml-pipeline-ui; do
  log "Waiting for deployment/$deployment"
  kc -n kubeflow wait --for condition=available --timeout=900s "deployment/$deployment"
done

log "Deploying MinIO and the avsc run settings"
kc create namespace avsc --dry-run=client -o yaml | kc apply -f -
if ! kc -n avsc get secret avsc-minio-root >/dev/null 2>&1; then
  # A random root password, kept only in the cluster.
  kc -n avsc create secret generic avsc-minio-root \
    --from-literal=user=avsc \
    --from-literal=password="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
fi
kc apply -k "$ROOT/k8s/overlays/kind"
kc -n avsc wait --for condition=available --timeout=300s deployment/minio
kc -n avsc wait --for condition=complete --timeout=300s job/minio-make-bucket

log "Creating the object-store secret avsc-s3 in namespace kubeflow"
kc -n kubeflow create secret generic avsc-s3 \
  --from-literal=endpoint=minio.avsc.svc.cluster.local:9000 \
  --from-literal=access_key="$(minio_credential user)" \
  --from-literal=secret_key="$(minio_credential password)" \
  --from-literal=region=us-east-1 \
  --from-literal=secure=false \
  --dry-run=client -o yaml | kc apply -f -

log "Loading ${images[*]} into the cluster"
for image in "${images[@]}"; do
  if [[ "$ENGINE" == docker ]]; then
    kind load docker-image --name "$CLUSTER" "$image"
  else
    archive="$STATE_DIR/$(basename "${image%%:*}").tar"
    podman save --format docker-archive -o "$archive" "$image"
    kind load image-archive --name "$CLUSTER" "$archive"
    rm -f "$archive"
  fi
done

log "Port-forwarding the Kubeflow Pipelines UI"
port_forward ui kubeflow svc/ml-pipeline-ui "$UI_PORT:80"
cat <<MSG

Kubeflow Pipelines UI: http://localhost:$UI_PORT
  (port-forward pid $(cat "$STATE_DIR/ui.pid"), log $STATE_DIR/ui.log)
Run the end-to-end test:  make kind-e2e
Remove everything:        make kind-down
MSG
