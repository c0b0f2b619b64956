# kubetune — developer entry points. Two commands matter on a fresh machine:
#   make demo   run the demo Study end to end on the local cluster
#   make test   run every test (unit, integration and end-to-end)
# Both install what they need first (make setup).

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
LOCAL     := PYTHONPATH=hack $(PY) -m localcluster

.PHONY: help setup system-deps python-deps binaries cluster cluster-down cluster-status \
        test unit lint bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: system-deps python-deps binaries ## install everything: Debian packages, Python env, cluster binaries

system-deps: ## Debian packages: etcd (the local cluster's store) and openssl
	@bash hack/system-deps.sh

python-deps: $(STAMP) ## the project's virtualenv (.venv) with the dev extras

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

binaries: ## build (once, cached in ~/.cache/kubetune) the Kubernetes and Prometheus binaries
	@bash hack/build-k8s.sh >/dev/null
	@bash hack/build-prometheus.sh >/dev/null

cluster: setup ## start the local cluster (kubeconfig: .localcluster/kubeconfig)
	@$(LOCAL) up

cluster-down: ## stop everything the local cluster started
	@test ! -x $(PY) || $(LOCAL) down

cluster-status: ## show the local cluster's processes
	@$(LOCAL) status

test: setup ## run all tests; starts the local cluster if it is not running, stops it after
	$(PY) -m pytest

unit: python-deps ## only the tests that need no cluster
	$(PY) -m pytest -m "not cluster"

lint: python-deps ## ruff and mypy (strict)
	$(PY) -m ruff check operator hack tests bench
	$(PY) -m ruff format --check operator hack tests bench
	$(PY) -m mypy

clean: cluster-down ## stop the cluster and remove its state
	rm -rf .localcluster
