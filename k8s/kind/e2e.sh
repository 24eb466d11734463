#!/usr/bin/env bash
# End-to-end run on the kind cluster made by up.sh: demo dataset -> pushed to MinIO through a
# port-forward -> pipeline submitted with --no-gpu --preset quick and waited for -> metrics.json
# and the Parquet embeddings checked in the store. The steps live in tests/e2e (pytest -m e2e).
#   k8s/kind/e2e.sh [extra pytest args]        (or: make kind-e2e)
set -euo pipefail
# shellcheck source=k8s/kind/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
check_prerequisites
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PYTHON" ]] || die "$PYTHON not found; run 'make install' first (or set PYTHON)"
cluster_exists || die "kind cluster '$CLUSTER' not found; run 'make kind-up' first"

log "Port-forwarding the KFP UI (:$UI_PORT) and MinIO (:$S3_PORT)"
port_forward ui kubeflow svc/ml-pipeline-ui "$UI_PORT:80"
port_forward minio avsc svc/minio "$S3_PORT:9000"
trap 'stop_port_forward minio' EXIT

export AVSC_KFP_HOST="http://localhost:$UI_PORT"
export AVSC_S3_ENDPOINT="localhost:$S3_PORT"
export AVSC_S3_ACCESS_KEY; AVSC_S3_ACCESS_KEY="$(minio_credential user)"
export AVSC_S3_SECRET_KEY; AVSC_S3_SECRET_KEY="$(minio_credential password)"
export AVSC_S3_REGION=us-east-1
export AVSC_S3_SECURE=false
export AVSC_E2E_BUCKET="${AVSC_E2E_BUCKET:-avsc}"
export AVSC_E2E_NO_GPU=1
export AVSC_E2E_PIPELINE_ROOT="${AVSC_E2E_PIPELINE_ROOT:-s3://avsc/pipeline-root}"

log "Running the end-to-end test against $AVSC_KFP_HOST"
cd "$ROOT"
"$PYTHON" -m pytest -m e2e tests/e2e -v "$@"
