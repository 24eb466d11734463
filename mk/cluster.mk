# Images, manifests and the local kind cluster (see docs/cluster.md).
# REGISTRY and VERSION name the images: $(REGISTRY)/avsc-cpu:$(VERSION), $(REGISTRY)/avsc-gpu:$(VERSION).
REGISTRY ?= ghcr.io/avsc
VERSION ?= $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/avsc/_version.py | head -n 1)
CONTAINER_ENGINE ?= $(shell command -v docker >/dev/null 2>&1 && echo docker || { command -v podman >/dev/null 2>&1 && echo podman; })
IMAGE_SOURCE ?= $(shell git remote get-url origin 2>/dev/null || echo https://github.com/avsc/avsc)
IMAGE_REVISION ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
IMAGE_FLAVOURS := cpu gpu

.PHONY: images
images: ## Build the avsc-cpu and avsc-gpu images with docker or podman
	@test -n "$(CONTAINER_ENGINE)" || { echo "error: neither docker nor podman found; install one to build images" >&2; exit 1; }
	@for flavour in $(IMAGE_FLAVOURS); do \
	  echo "==> $(REGISTRY)/avsc-$$flavour:$(VERSION)"; \
	  $(CONTAINER_ENGINE) build -f docker/$$flavour.Dockerfile \
	    --build-arg VERSION=$(VERSION) --build-arg SOURCE=$(IMAGE_SOURCE) --build-arg REVISION=$(IMAGE_REVISION) \
	    -t $(REGISTRY)/avsc-$$flavour:$(VERSION) . || exit 1; \
	done

.PHONY: push
push: ## Push both images (log in first; e.g. make push REGISTRY=registry.example.com/ml)
	@test -n "$(CONTAINER_ENGINE)" || { echo "error: neither docker nor podman found" >&2; exit 1; }
	@for flavour in $(IMAGE_FLAVOURS); do \
	  $(CONTAINER_ENGINE) push $(REGISTRY)/avsc-$$flavour:$(VERSION) || exit 1; \
	done

.PHONY: pin-bases
pin-bases: ## Re-resolve the digests of pinned base/third-party images (needs docker buildx, skopeo or crane)
	scripts/pin-images.sh

.PHONY: lint-docker
lint-docker: $(STAMP) ## Lint both Dockerfiles with hadolint
	$(VENV)/bin/hadolint docker/cpu.Dockerfile docker/gpu.Dockerfile

.PHONY: lint-k8s
lint-k8s: $(STAMP) ## Render every local kustomization and validate it against the Kubernetes 1.33 schema
	$(PY) -m pytest -q tests/test_containers.py

.PHONY: kind-up
kind-up: ## Local kind cluster: KFP 2.17.0 standalone, MinIO, avsc settings and images; UI port-forward
	k8s/kind/up.sh

.PHONY: kind-e2e
kind-e2e: $(STAMP) ## On the kind cluster: push demo data, run the pipeline (--no-gpu, quick), check outputs
	k8s/kind/e2e.sh

.PHONY: kind-down
kind-down: ## Stop the port-forwards and delete the kind cluster
	k8s/kind/down.sh
