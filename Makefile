# scanctl: `make demo` runs a scan end to end against the bundled simulated upstream;
# `make test` runs the tests; `make bench` the benchmarks. All install what they need into .venv
# first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install system-deps demo test bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "scanctl needs Python >= 3.11; set PYTHON=")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# Programs some tests use (jq runs the README's recipes; redis-server backs the Redis cache
# tests, which start their own on a free port; zsh and fish run the completion scripts scanctl
# generates for them; faketime runs a process with its clock 2 s ahead, as another machine's;
# Debian's packages have these names). Installed via apt when missing and
# possible; a test whose program is still missing skips and says why.
SYSTEM_PROGRAMS := jq redis-server zsh fish faketime
system-deps:
	@missing=""; for p in $(SYSTEM_PROGRAMS); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
		echo "installing$$missing with apt-get"; \
		($$sudo apt-get update -qq && $$sudo apt-get install -y -qq $$missing) >/dev/null 2>&1 \
			|| echo "could not install$$missing; what needs them will skip or say so"; \
	fi

demo: install
	SCANCTL=$(BIN)/scanctl ./examples/demo.sh

test: install system-deps
	$(BIN)/python -m pytest

# Benchmarks are not tests: they print tables of figures measured in one run (pacing against
# rate limits, faults and an outage, beside the original scanner; then a latency-bound scan;
# then the cache: a re-run within the TTL, and a bulk read of 4000 entries; then speed: overhead
# beside peer clients, latency-bound, 100k symbols and startup, with a chart). The peers and the
# chart need the `bench` extra (installed once per change of pyproject.toml), and speed.py uses
# wrk and hyperfine when present (installed via apt when possible; without them it says so).
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	@$(MAKE) --no-print-directory system-deps SYSTEM_PROGRAMS="wrk hyperfine"
	@# An installed scanctl starts from bytecode (pip compiles it); this checkout may not, where
	@# PYTHONDONTWRITEBYTECODE is set, and would pay ~50 ms more per run for compiling.
	$(BIN)/python -m compileall -q scanctl
	$(BIN)/python benchmarks/pacing.py
	$(BIN)/python benchmarks/latency_bound.py --symbols 1000 --concurrency 50 --median 0.1
	$(BIN)/python benchmarks/cache.py --symbols 1000 --entries 4000
	$(BIN)/python benchmarks/speed.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis
