# One command to run the service locally, one to test it. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
PY := $(VENV)/bin/python
SAM := $(SAM_VENV)/bin/sam
# Lambda runs python3.12/arm64; pyenv provides 3.12 beside 3.11 for `sam build`.
SAM_ENV := SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} PYENV_VERSION=3.11.7:3.12.1
HOST ?= 127.0.0.1
PORT ?= 3000
# The job board beside it: always on 127.0.0.1 (it has no login), whatever HOST says.
BOARD_PORT ?= 8050

.PHONY: help venv sam-venv run demo lint typecheck unit test pytest validate build fuzz bench bench-smoke e2e clean fmt

help:
	@echo "make run        start the local runtime on http://$(HOST):$(PORT), its job board on http://127.0.0.1:$(BOARD_PORT)"
	@echo "make demo       NMDC's metagenome chain from one tag to a finished MAGs job, drawn live (stops by itself)"
	@echo "make test       ruff, mypy, the test suite, sam validate --lint and sam build"
	@echo "make bench      benchmarks -> bench/results/latest.json and docs/benchmarks.md"
	@echo "make fuzz       schemathesis against the local runtime's API, long (FUZZ_EXAMPLES=300)"
	@echo "make e2e STACK=name   end-to-end suite against a deployed stack"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# SAM pins its own boto3/pydantic: it lives in its own virtualenv, never in the project's.
$(SAM_VENV)/.installed:
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q --upgrade pip
	$(SAM_VENV)/bin/python -m pip install -q 'aws-sam-cli>=1.130'
	touch $@

sam-venv: $(SAM_VENV)/.installed

run: venv
	$(VENV)/bin/jobtriggers local --host $(HOST) --port $(PORT) --board-port $(BOARD_PORT)

# The local runtime on free ports, one `site work` worker per workflow of NMDC's chain, one tag:
# the chain drawn live as it runs, then the final tree. Stops by itself (DEMO_TIMEOUT seconds at most).
demo: venv
	$(VENV)/bin/jobtriggers demo --timeout $${DEMO_TIMEOUT:-180}

fmt: venv
	$(VENV)/bin/ruff format layers functions tests bench
	$(VENV)/bin/ruff check --fix layers functions tests bench

# lint-imports checks the floors (the contracts in pyproject.toml); a broken one is named.
lint: venv
	$(VENV)/bin/ruff check layers functions tests bench
	$(VENV)/bin/ruff format --check layers functions tests bench
	$(VENV)/bin/lint-imports --no-cache

typecheck: venv
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy tests bench
	@# each handler is its own `app` module, so each is checked on its own
	for f in functions/*/app.py; do $(VENV)/bin/mypy $$f || exit 1; done

pytest: venv
	$(VENV)/bin/pytest

# The board's browser tests drive Debian's chromium: Playwright cannot download its own browser here.
# Playwright itself comes with the dev extras (pyproject.toml). Needs root, or sudo.
CHROMIUM := /usr/bin/chromium
APT_GET := $(shell [ "$$(id -u)" = 0 ] || echo sudo) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600
.PHONY: browser board-screenshot

$(CHROMIUM):
	$(APT_GET) update -qq
	$(APT_GET) install -y -qq --no-install-recommends chromium fonts-dejavu-core

browser: $(CHROMIUM)

pytest: browser

# The job board as an operator's browser shows it, from real data: a local runtime of its own that
# sites fill over HTTP (tests/board/runtime_data.py); about a minute.
board-screenshot: venv browser
	$(PY) -m tests.board.screenshot docs/board.png --full-page

validate: sam-venv
	$(SAM_ENV) $(SAM) validate --lint

build: sam-venv
	$(SAM_ENV) $(SAM) build --parallel

test: lint typecheck pytest validate build

# Not part of `make test` (about 16 minutes on 2 shared cores); builds the layer first to report its size.
bench: venv
	test -d .aws-sam/build/JobTriggersLayer || $(MAKE) build
	$(PY) -m bench.run

# Small sizes, one run each; tests/bench/test_bench_smoke.py runs the same in `make test`.
bench-smoke: venv
	$(PY) -m bench.run --smoke

# The fuzzer for long: schemathesis over the local runtime's /openapi.json (`make test` runs a
# bounded, derandomized pass of the same test). FUZZ_EXAMPLES per operation and mode; a random
# FUZZ_SEED each run (printed; set it to repeat a run).
fuzz: venv
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-300} FUZZ_SEED=$${FUZZ_SEED:-$$RANDOM} \
		$(VENV)/bin/pytest tests/e2e/test_fuzz.py -s -o timeout=0

# The end-to-end scenarios over HTTPS against a stack deployed with `sam deploy` (AWS credentials
# needed; without them every test is skipped saying so). `make test` never runs these.
e2e: venv
	@test -n "$(STACK)" || { echo "usage: make e2e STACK=<name of a stack deployed with sam deploy>"; exit 2; }
	JOBTRIGGERS_E2E_STACK=$(STACK) $(VENV)/bin/pytest tests/e2e_aws -rs

clean:
	rm -rf .aws-sam .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
