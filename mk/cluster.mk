# Images, manifests and the local kind cluster (see docs/cluster.md).
# REGISTRY and VERSION name the images: $(REGISTRY)/avsc-cpu:$(VERSION), $(REGISTRY)/avsc-gpu:$(VERSION).
# The scripts behind these targets pick the container engine that answers (docker with a running
# daemon, else podman); CONTAINER_ENGINE=docker|podman overrides.
REGISTRY ?= ghcr.io/avsc
VERSION ?= $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/avsc/_version.py | head -n 1)
FLAVOURS ?= cpu gpu
# Build inputs, all optional: BASE_IMAGE (Python 3.11 bookworm base, fully qualified), WEIGHTS_DIR
# (ImageNet weights files to bake in instead of downloading), CA_BUNDLE (CA bundle for pip and
# downloads in the build behind a TLS-inspecting proxy; defaults to $SSL_CERT_FILE when set),
# PYPI_MIRROR (index URL pip installs from in the build).
BASE_IMAGE ?=
WEIGHTS_DIR ?=
PYPI_MIRROR ?=
CA_BUNDLE ?= $(SSL_CERT_FILE)
DEBIAN_BASE_IMAGE ?= localhost/avsc-python:3.11-bookworm
export CONTAINER_ENGINE
IMAGE_ENV = REGISTRY="$(REGISTRY)" VERSION="$(VERSION)" BASE_IMAGE="$(BASE_IMAGE)" \
  WEIGHTS_DIR="$(WEIGHTS_DIR)" CA_BUNDLE="$(CA_BUNDLE)" PYPI_MIRROR="$(PYPI_MIRROR)"

.PHONY: images
images: ## Build the images (FLAVOURS=cpu for one; BASE_IMAGE=, WEIGHTS_DIR=, CA_BUNDLE=, PYPI_MIRROR= optional)
	$(IMAGE_ENV) scripts/build-images.sh $(FLAVOURS)

.PHONY: check-images
check-images: ## Smoke-check the built images: image's user and an arbitrary UID, read-only root, no network
	$(IMAGE_ENV) scripts/check-image.sh $(foreach f,$(FLAVOURS),$(REGISTRY)/avsc-$(f):$(VERSION))

.PHONY: debian-base
debian-base: ## Make a Python 3.11 base image from Debian packages (no Docker Hub; needs root, debootstrap)
	scripts/debian-python-base.sh $(DEBIAN_BASE_IMAGE)

.PHONY: push
push: ## Push the images (log in first; e.g. make push REGISTRY=registry.example.com/ml)
	@engine="$$(source scripts/container-engine.sh && container_engine)" || exit 1; \
	for image in $(foreach f,$(FLAVOURS),$(REGISTRY)/avsc-$(f):$(VERSION)); do \
	  "$$engine" push "$$image" || exit 1; \
	done

.PHONY: pin-bases
pin-bases: ## Re-resolve the digests of pinned base/third-party images (needs docker buildx, skopeo or crane)
	scripts/pin-images.sh

.PHONY: lint-docker
lint-docker: $(STAMP) ## Lint both Dockerfiles with hadolint
	$(VENV)/bin/hadolint docker/cpu.Dockerfile docker/gpu.Dockerfile

.PHONY: lint-k8s
lint-k8s: $(STAMP) ## Render every local kustomization and validate it against the Kubernetes 1.33 schema
	$(PY) -m pytest -q tests/test_containers.py -m "not container"

.PHONY: test-containers
test-containers: $(STAMP) ## Build the CPU image and run a tiny pipeline in it (--runner docker; needs an engine)
	$(PY) -m pytest -m container -v -rP tests/test_container_run.py

.PHONY: kind-up
kind-up: ## Local kind cluster: KFP 2.17.0 standalone, MinIO, avsc settings and the CPU image (GPU=1: both)
	REGISTRY="$(REGISTRY)" VERSION="$(VERSION)" k8s/kind/up.sh

.PHONY: kind-e2e
kind-e2e: $(STAMP) ## On the kind cluster: push demo data, run the pipeline (--no-gpu, quick), check outputs
	k8s/kind/e2e.sh

.PHONY: kind-down
kind-down: ## Stop the port-forwards and delete the kind cluster
	k8s/kind/down.sh
