# duroot-stream — every target works on a fresh clone: it makes the virtual
# environment, installs what is missing and fetches the broker jars once.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
DIR    ?= .
PYTEST_ARGS ?=
# The build the tests must find (tests/test_build.py): compiled where a C compiler is,
# pure with DUROOT_PURE_PYTHON=1 (told independently of the build, which could fall back).
EXPECT_BUILD := $(if $(filter-out 0,$(DUROOT_PURE_PYTHON)),pure,$(if $(shell command -v cc || command -v gcc),compiled,pure))
PURE   := build/pure

.PHONY: run test test-pure test-reliability bench bench-quick bench-latency bench-history bench-failover bench-baseline lint broker deps compiled jars images clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

deps:
	@scripts/system-deps.sh

## make compiled: the compiled modules (hatch_build.py) rebuilt beside the sources where
## one changed, or removed for a pure build (DUROOT_PURE_PYTHON=1); every target runs it
compiled: $(STAMP)
	@$(BIN)/python hatch_build.py

jars: $(STAMP) deps compiled
	@$(BIN)/python -c "from duroot_stream.local.jars import fetch_jars; fetch_jars()"

## make run [DIR=path]: local broker, processor, runner, a du of DIR, results printed, then
## the result page served at http://127.0.0.1:8080/ until Ctrl-C
run: jars
	$(BIN)/duroot-stream run --serve 8080 $(DIR)

## make test: the whole suite (minus the long reliability runs) against a real broker
test: jars
	@scripts/system-deps.sh --test
	DUROOT_EXPECT_BUILD=$(EXPECT_BUILD) $(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

## make test-pure: the unit tests (no broker) against the pure Python build, installed
## apart from the sources (and their compiled modules) and put first on the path
test-pure: $(STAMP)
	rm -rf $(PURE)
	DUROOT_PURE_PYTHON=1 $(BIN)/pip install -q --no-deps --no-build-isolation --target $(PURE) .
	PYTHONPATH=$(PURE) DUROOT_EXPECT_BUILD=pure $(BIN)/pytest -m "not broker and not slow" $(PYTEST_ARGS)

## make test-reliability: crash storms, broker restart, bad input, rebalances (slow)
test-reliability: jars
	DUROOT_EXPECT_BUILD=$(EXPECT_BUILD) $(BIN)/pytest -m slow $(PYTEST_ARGS)

## make bench: every benchmark; the table of figures and targets (benchmarks/targets.py:
## each figure, its target, met?) printed and written to bench-results/summary.json,
## each module's figures to bench-results/<module>.json
bench: jars
	$(BIN)/python -m benchmarks

## make bench-quick: the same at reduced sizes (a few minutes)
bench-quick: jars
	$(BIN)/python -m benchmarks --quick

## make bench-latency: the latency set-up alone (capacity, the curve, tuned vs default)
bench-latency: jars
	$(BIN)/python -m benchmarks.processor latency

## make bench-history: restore of one partition of 10,000,000 events (not in make bench)
bench-history: jars
	$(BIN)/python -m benchmarks.history

## make bench-failover: two processors under 200 commands/s over 1,000,000 events of
## history; one crashes, stops or restarts, or a third joins: per partition how long
## it went unanswered (bench-results/failover.json; about 15 minutes; not in make bench)
bench-failover: jars
	$(BIN)/python -m benchmarks.failover

## make bench-baseline REV=<commit>: this tree's processor against REV's, taking turns
## (throughput, latency at 200/s and 1,000/s, restore, memory, the Python per command;
## bench-results/baseline.json). REV is required: say what to compare against.
bench-baseline: jars
	@test -n "$(REV)" || { echo "make bench-baseline REV=<commit>: name the commit to compare with" >&2; exit 2; }
	$(BIN)/python -m benchmarks.baseline $(REV)

## make images: the README's pictures (web pages, dashboard panels) from real runs
images: jars
	@scripts/system-deps.sh --test
	@scripts/readme-images.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks hatch_build.py
	$(BIN)/ruff format --check src tests benchmarks hatch_build.py
	$(BIN)/mypy

broker: jars
	$(BIN)/duroot-stream broker

clean:
	rm -rf $(VENV) bench-results .pytest_cache .mypy_cache .ruff_cache build
	find src -name '*.so' -delete; rm -f src/duroot_stream/compiled-sources.sha256
