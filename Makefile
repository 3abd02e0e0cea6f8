# LMStack developer entry points. Everything a fresh machine needs is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= ./data
STAMP := $(VENV)/.installed

.PHONY: install run test check proto proto-check bench deploy docker engine-image clean migration

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	VENV=$(VENV) DATA_DIR=$(DATA_DIR) bash scripts/run-local.sh

# The suite needs a Docker engine (installed and started when none answers),
# the stand-in engine image (built locally: no registry is reachable) and a
# PostgreSQL server: $$LMSTACK_TEST_DATABASE_URL when set, else a throw-away
# cluster in a temporary directory, dropped afterwards whether tests pass or not.
# PYTEST_ARGS: extra pytest arguments, e.g. PYTEST_ARGS="-x tests/store".
PYTEST_ARGS ?=
test: $(STAMP) engine-image
	@pgdir="$$(mktemp -d /tmp/lmstack-pg.XXXXXX)"; \
	trap 'bash scripts/stop-postgres.sh "$$pgdir"' EXIT; \
	url="$$(bash scripts/ensure-postgres.sh "$$pgdir")" && \
	LMSTACK_TEST_DATABASE_URL="$$url" $(PY) -m pytest $(PYTEST_ARGS)

# A schema revision for what changed in controller/store/models.py, e.g.
#   make migration MSG="add workers.labels"     (then review and commit the file)
migration: $(STAMP)
	@test -n "$(MSG)" || { echo 'usage: make migration MSG="what changed"' >&2; exit 2; }
	$(PY) -m controller.store.migrate revision "$(MSG)"
	$(VENV)/bin/ruff check --fix --quiet controller/store/migrations/versions
	$(VENV)/bin/ruff format --quiet controller/store/migrations/versions

docker:
	bash scripts/ensure-docker.sh

engine-image: docker
	bash tests/engine/build_image.sh

# Install the agent on GPU hosts over SSH (root or passwordless sudo there), e.g.
#   make deploy HOSTS="gpu1 gpu2" CONTROLLER=ctl.example:50051 TOKEN=<data/agent_token>
# SSH_OPTS: ssh/scp options (-i KEY, -o Port=N); INSTALL_ARGS: extra deploy/install.sh flags.
HOSTS ?=
CONTROLLER ?=
TOKEN ?=
SSH_OPTS ?=
INSTALL_ARGS ?=
export SSH_OPTS

deploy:
	@LMSTACK_DEPLOY_TOKEN='$(TOKEN)' PYTHON="$$(test -x $(PY) && echo $(PY) || echo $(PYTHON))" \
		bash scripts/deploy.sh --controller '$(CONTROLLER)' $(HOSTS) -- $(INSTALL_ARGS)

check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy controller agent shared cli tests bench

proto: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m grpc_tools.protoc -Iproto --python_out=shared/proto --grpc_python_out=shared/proto \
		--mypy_out=shared/proto --mypy_grpc_out=shared/proto proto/lmstack/v1/agent.proto
	sed -i 's/^from lmstack\.v1 import/from shared.proto.lmstack.v1 import/' shared/proto/lmstack/v1/*.py shared/proto/lmstack/v1/*.pyi

# Each benchmark prints its figures and PASS/FAIL against its target, and exits
# non-zero on FAIL. All of them run; then `make bench` fails if any did, naming
# them. One alone: $(PY) -m bench.gateway
BENCHMARKS := deployments_list placement command_latency gateway gateway_limits fleet_scale reconcile_restart
bench: $(STAMP)
	@failed=""; \
	for name in $(BENCHMARKS); do \
		echo "== bench.$$name"; \
		$(PY) -m bench.$$name || failed="$$failed bench.$$name"; \
	done; \
	if [ -n "$$failed" ]; then echo "make bench: failed:$$failed" >&2; exit 1; fi

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
