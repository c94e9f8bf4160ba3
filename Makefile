# duroot-stream — every target works on a fresh clone: it makes the virtual
# environment, installs what is missing and fetches the broker jars once.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
DIR    ?= .
PYTEST_ARGS ?=

.PHONY: run test test-reliability bench bench-quick bench-latency bench-history bench-failover bench-baseline lint broker deps jars images clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

deps:
	@scripts/system-deps.sh

jars: $(STAMP) deps
	@$(BIN)/python -c "from duroot_stream.local.jars import fetch_jars; fetch_jars()"

## make run [DIR=path]: local broker, processor, runner, a du of DIR, results printed, then
## the result page served at http://127.0.0.1:8080/ until Ctrl-C
run: jars
	$(BIN)/duroot-stream run --serve 8080 $(DIR)

## make test: the whole suite (minus the long reliability runs) against a real broker
test: jars
	@scripts/system-deps.sh --test
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

## make test-reliability: crash storms, broker restart, bad input, rebalances (slow)
test-reliability: jars
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

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
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

broker: jars
	$(BIN)/duroot-stream broker

clean:
	rm -rf $(VENV) bench-results .pytest_cache .mypy_cache .ruff_cache
