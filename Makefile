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

# "The current cluster": $KUBECONFIG if set, else the local cluster when it is up.
LOCAL_KUBECONFIG := $(CURDIR)/.localcluster/kubeconfig
export KUBECONFIG ?= $(if $(wildcard $(LOCAL_KUBECONFIG)),$(LOCAL_KUBECONFIG),$(HOME)/.kube/config)
KUBECTL    = $(shell bash hack/build-k8s.sh 2>/dev/null)/kubectl
PROM_URL   = $(shell cat .localcluster/prometheus-url 2>/dev/null)

.PHONY: help setup system-deps python-deps binaries addons cluster cluster-down cluster-status \
        install uninstall run demo test chaos unit lint bench bench-scale clean chart-crds

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

binaries: ## build (once, cached in ~/.cache/kubetune) Kubernetes, Prometheus, Helm and KWOK
	@bash hack/build-k8s.sh >/dev/null
	@bash hack/build-prometheus.sh >/dev/null
	@bash hack/build-helm.sh >/dev/null
	@bash hack/build-kwok.sh >/dev/null

cluster: setup ## start the local cluster; ADDONS="kueue jobset" starts those controllers too
	@$(LOCAL) up --addons "$(ADDONS)"

cluster-down: ## stop everything the local cluster started
	@test ! -x $(PY) || $(LOCAL) down

cluster-status: ## show the local cluster's processes
	@$(LOCAL) status

install: binaries ## apply the CRDs (crds/) to the current cluster
	$(KUBECTL) apply --server-side -f crds/
	$(KUBECTL) wait --for=condition=Established crd/studies.kubetune.dev crd/trials.kubetune.dev

uninstall: ## delete the CRDs (and with them every Study and Trial!)
	$(KUBECTL) delete -f crds/ --ignore-not-found

run: python-deps ## run the operator against the current cluster (Prometheus URL from the local cluster)
	KUBETUNE_PROMETHEUS_URL=$${KUBETUNE_PROMETHEUS_URL:-$(PROM_URL)} $(PY) -m kubetune

demo: setup ## the demo: local cluster, CRDs, operator, examples/digits-study.yaml to the end
	PYTHONPATH=hack $(PY) hack/demo.py

test: setup addons ## run all tests; starts the local cluster if it is not running, stops it after
	$(PY) -m pytest

addons: ## build (once, cached) the cluster add-ons the tests start: Kueue and JobSet
	@bash hack/build-addon.sh kueue >/dev/null
	@bash hack/build-addon.sh jobset >/dev/null

chaos: setup ## the full reliability suite (~12 min; make test runs a short form): bench/results/chaos.json
	KUBETUNE_CHAOS=full $(PY) -m pytest tests/chaos

unit: python-deps ## only the tests that need no cluster
	$(PY) -m pytest -m "not cluster"

lint: python-deps binaries ## ruff, mypy (strict), hadolint, helm lint
	$(PY) -m ruff check operator hack tests bench trainer-image
	$(PY) -m ruff format --check operator hack tests bench trainer-image
	$(PY) -m mypy
	$(VENV)/bin/hadolint trainer-image/Dockerfile operator/Dockerfile
	$$(bash hack/build-helm.sh 2>/dev/null)/helm lint --strict charts/kubetune

chart-crds: ## copy crds/ into the chart (a test checks they match)
	cp crds/*.yaml charts/kubetune/crds/

bench: python-deps ## benchmarks (JSON under bench/results/)
	$(PY) bench/trainer_throughput.py

# The benchmarks run their own local clusters (in .localcluster-bench), so a test session's
# cluster is never restarted under it. Run them on an otherwise quiet machine.
BENCH_CLUSTER := LOCALCLUSTER_DIR=$(CURDIR)/.localcluster-bench

bench-scale: setup ## many Studies on KWOK's simulated GPU nodes (bench/results/scale-*.json)
	$(BENCH_CLUSTER) PYTHONPATH=hack $(PY) bench/scale.py $(or $(ARGS),--steps 5x20,25x20,100x20 --trials 40 --duration 60s --sampler tpe)

.PHONY: bench-loop
bench-loop: setup ## trial turnover on the local cluster vs in-process Optuna (bench/results/loop.json)
	$(BENCH_CLUSTER) $(PY) bench/loop.py $(ARGS)

# The search benchmark (issue 13; see bench/search_*.py): a fast task through in-process
# Optuna and through kubetune at parallelism 1 and 8, with the same specs and seeds.
SEARCH_TASK    ?= hartmann6
SEARCH_SEEDS   ?= 10
SEARCH_STEP_S  ?= 0.5
SEARCH_METHODS ?= random,qmc,tpe,tpe-qmc,gp,cmaes,tpe/median,tpe/successive-halving,tpe/hyperband,random/hyperband
.PHONY: bench-search
bench-search: setup ## search quality and pruning through kubetune vs in-process Optuna (bench/results/search-*)
	$(PY) bench/search_inprocess.py --task $(SEARCH_TASK) --seeds $(SEARCH_SEEDS) \
	  --seconds-per-step $(SEARCH_STEP_S) --methods $(SEARCH_METHODS)
	$(PY) bench/search_inprocess.py --task $(SEARCH_TASK) --seeds $(SEARCH_SEEDS) \
	  --seconds-per-step $(SEARCH_STEP_S) --methods random,qmc,tpe,tpe-qmc,gp,cmaes --parallelism 8 \
	  --out bench/results/search-inprocess-p8-$(SEARCH_TASK).json
	for par in 1 8; do $(BENCH_CLUSTER) $(PY) bench/search_operator.py --task $(SEARCH_TASK) \
	  --seeds $(SEARCH_SEEDS) --parallelism $$par --seconds-per-step $(SEARCH_STEP_S) \
	  --methods $(SEARCH_METHODS) --time-limit 36000 || exit 1; done
	$(PY) bench/search_report.py bench/results/search-inprocess-$(SEARCH_TASK).json \
	  bench/results/search-inprocess-p8-$(SEARCH_TASK).json bench/results/search-kubetune-$(SEARCH_TASK).json

clean: cluster-down ## stop the cluster and remove its state
	rm -rf .localcluster .localcluster-bench
