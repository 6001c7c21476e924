# Two entry points: `make demo` (the embedded benchmark) and `make test` (lint, types, tests).
# Both create .venv and install pinned packages themselves (uv, from the lock files below).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv pip install --python $(BIN)/python --quiet
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export MPLBACKEND := Agg

.PHONY: demo test lint typecheck lock runner-lock schema clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv

# runtime packages only: enough for the demo
$(VENV)/.core: $(BIN)/uv requirements.lock pyproject.toml
	$(UV) -r requirements.lock
	$(UV) --no-deps -e .
	touch $@

# runtime + test, lint and CDK packages
$(VENV)/.dev: $(BIN)/uv requirements-dev.lock pyproject.toml
	$(UV) -r requirements-dev.lock
	$(UV) --no-deps -e .
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(BIN)/fmbench run examples/local-demo.yaml --out results/demo

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo

typecheck: $(VENV)/.dev
	$(BIN)/mypy

# the npm validators the tests run (asl-validator on the state machine), pinned by package-lock.json
node_modules/.bin/asl-validator: package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

# Two workers (pytest-xdist), each given whole test files so that a file's module fixtures (an emulator, the
# synthesized stack, the deployed workflow) are built once: most tests wait on child processes and loopback
# HTTP, so two workers on two cores take about 60 % of one worker's time. TEST_WORKERS=0 runs in-process.
TEST_WORKERS ?= 2

test: lint typecheck node_modules/.bin/asl-validator
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# re-pin after changing dependencies in pyproject.toml
lock: $(BIN)/uv
	$(BIN)/uv pip compile --quiet --python-version 3.11 pyproject.toml -o requirements.lock
	$(BIN)/uv pip compile --quiet --python-version 3.11 --extra dev --extra infra --extra aws pyproject.toml -o requirements-dev.lock
	$(MAKE) runner-lock

# the runner/Lambda image, one hashed lock per stage, both at the pins the tests run with: the runner stage
# gets the core only; the lambda stage adds the aws extra (the SageMaker SDK, for image URIs at Plan) and the
# Lambda runtime client, so that the SDK's ~250 MB (mlflow, scipy, scikit-learn) never ship to a runner
runner-lock: $(BIN)/uv requirements-dev.lock
	$(BIN)/uv pip compile --quiet --python-version 3.11 --python-platform linux --generate-hashes \
		pyproject.toml -c requirements-dev.lock -o requirements-runner.lock
	$(BIN)/uv pip compile --quiet --python-version 3.11 --python-platform linux --generate-hashes --extra aws \
		pyproject.toml runner_image/requirements-image.in -c requirements-dev.lock -o requirements-lambda.lock

schema: $(VENV)/.core
	$(BIN)/fmbench schema --out schema

clean:
	rm -rf $(VENV) results cdk.out node_modules .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
