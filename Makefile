# Every target bootstraps its own virtual environment, so a fresh clone needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROTO_FILES := $(wildcard protos/reviewlearn/*/v1/*.proto)

.DEFAULT_GOAL := help
.PHONY: help run test check lint format typecheck imports proto proto-check alerts-check bench faults demo \
	clean manifests grafana

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP) ## Start the whole system (embedded PostgreSQL unless REVIEWLEARN_DATABASE_URL is set)
	$(BIN)/reviewlearn up

demo: $(STAMP) ## Load a synthetic review history into the running system and show what it learned
	$(BIN)/reviewlearn demo

test: $(STAMP) ## Run the test suite against a real PostgreSQL (and Redis when available)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: lint typecheck imports proto-check alerts-check manifests ## Lint, format check, mypy strict, import contracts, fresh protos, Prometheus rules, manifests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd protos && ../$(BIN)/buf lint

format: $(STAMP) ## Apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

proto: $(STAMP) ## Regenerate the Python code and stubs beside the protos
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc -I protos \
		--python_out=protos --grpc_python_out=protos \
		--mypy_out=protos --mypy_grpc_out=protos $(PROTO_FILES)

proto-check: $(STAMP) ## Fail if the committed generated code is not what the protos generate
	@tmp=$$(mktemp -d) && \
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc -I protos \
		--python_out=$$tmp --grpc_python_out=$$tmp --mypy_out=$$tmp --mypy_grpc_out=$$tmp $(PROTO_FILES) && \
	for f in $$(cd $$tmp && find . -name '*.py' -o -name '*.pyi'); do \
		cmp -s $$tmp/$$f protos/$$f || { echo "stale generated code: protos/$$f (run make proto)"; rm -rf $$tmp; exit 1; }; \
	done; rm -rf $$tmp; echo "generated code is fresh"

alerts-check: $(STAMP) ## Fail if deploy/'s Prometheus rules differ from the alert catalogue; promtool check + test
	$(BIN)/python -m services.control.prometheus_export --check
	.ci/promtool check rules deploy/prometheus/reviewlearn-alerts.yaml
	.ci/promtool test rules deploy/prometheus/reviewlearn-alerts.test.yaml

bench: $(STAMP) ## Run the benchmarks (needs PostgreSQL; prints numbers and ratios, asserts nothing about speed)
	$(BIN)/python -m pytest tests/benchmarks -m benchmark -s -p no:cacheprovider $(PYTEST_ARGS)

faults: $(STAMP) ## Kill services, restart PostgreSQL and Redis under load (private servers); prints the figures
	$(BIN)/python -m pytest tests/faults -m faults -s -p no:cacheprovider $(PYTEST_ARGS)

clean: ## Remove the virtual environment and local state
	rm -rf $(VENV) .reviewlearn .pytest_cache .mypy_cache .ruff_cache

# The PrometheusRule is a CRD the Kubernetes schemas do not cover (a warning here).
manifests: $(STAMP) ## Render the kustomize base and overlays; validate them (kubernetes-validate --strict)
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	for dir in deploy/k8s/base deploy/k8s/overlays/*; do \
		$(BIN)/kubectl kustomize $$dir > $$tmp/$$(basename $$dir).yaml || exit 1; \
	done && \
	for version in 1.28.0 1.33.0; do \
		$(BIN)/kubernetes-validate --strict --quiet -k $$version $$tmp/*.yaml \
			deploy/k8s/base/secret.example.yaml || exit 1; \
	done && echo "manifests render and validate (Kubernetes 1.28, 1.33)"

grafana: $(STAMP) ## Regenerate the Grafana dashboard deploy/grafana/reviewlearn.json from its code
	$(BIN)/python deploy/grafana/generate.py
