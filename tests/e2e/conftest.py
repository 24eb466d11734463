"""End-to-end tests against a real Kubeflow Pipelines endpoint.

They run only when AVSC_KFP_HOST names one (``make kind-e2e`` sets it up against the local
kind cluster, with the object store reachable through a port-forward) and are deselected by
``make test`` (``-m "not e2e"``).

Environment:
    AVSC_KFP_HOST: KFP API/UI URL, e.g. http://localhost:8080.
    AVSC_S3_ENDPOINT, AVSC_S3_ACCESS_KEY, AVSC_S3_SECRET_KEY, AVSC_S3_SECURE, AVSC_S3_REGION:
        the object store as seen from this machine (the cluster reads the Secret avsc-s3).
    AVSC_E2E_BUCKET: bucket for the dataset and outputs (default ``avsc``).
    AVSC_E2E_PIPELINE_ROOT: s3:// pipeline root to expect artifacts under (optional).
    AVSC_E2E_NO_GPU: "1" to compile without GPU requests (clusters without GPUs, e.g. kind).
    AVSC_E2E_TIMEOUT: seconds to wait for the run (default 3600).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("AVSC_KFP_HOST"):
        return
    skip = pytest.mark.skip(
        reason="needs a Kubeflow Pipelines endpoint: set AVSC_KFP_HOST (make kind-up && make kind-e2e does)"
    )
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


@dataclass(frozen=True)
class Cluster:
    host: str
    bucket: str
    no_gpu: bool
    timeout_s: int
    pipeline_root: str | None


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    missing = [
        name for name in ("AVSC_S3_ENDPOINT", "AVSC_S3_ACCESS_KEY", "AVSC_S3_SECRET_KEY") if not os.environ.get(name)
    ]
    if missing:
        pytest.fail(f"set {', '.join(missing)} to reach the object store from this machine")
    return Cluster(
        host=os.environ["AVSC_KFP_HOST"].rstrip("/"),
        bucket=os.environ.get("AVSC_E2E_BUCKET", "avsc"),
        no_gpu=os.environ.get("AVSC_E2E_NO_GPU", "") not in ("", "0", "false"),
        timeout_s=int(os.environ.get("AVSC_E2E_TIMEOUT", "3600")),
        pipeline_root=os.environ.get("AVSC_E2E_PIPELINE_ROOT") or None,
    )


@pytest.fixture(scope="session")
def store():
    """A minio client for the object store, from the AVSC_S3_* variables."""
    from minio import Minio

    endpoint = os.environ["AVSC_S3_ENDPOINT"]
    for scheme in ("http://", "https://"):
        endpoint = endpoint.removeprefix(scheme)
    return Minio(
        endpoint,
        access_key=os.environ["AVSC_S3_ACCESS_KEY"],
        secret_key=os.environ["AVSC_S3_SECRET_KEY"],
        region=os.environ.get("AVSC_S3_REGION") or None,
        secure=os.environ.get("AVSC_S3_SECURE", "true").lower() == "true",
    )
