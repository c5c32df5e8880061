# The two commands a new user needs: `make demo` and `make test` (see README.md).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo run test pytest lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# Compiled now (about 50 s on 2 cores), not at the first `run`, which is then ready in
	# about 2 s instead of 50 (cached in the package's __pycache__/kernels, per source digest).
	$(BIN)/otel-anomaly compile-kernels
	touch $(STAMP)

setup: $(STAMP)

demo: setup  ## run the sidecar on its embedded default config and feed it demo traffic
	$(BIN)/otel-anomaly demo

run: setup  ## run the sidecar on its embedded default config
	$(BIN)/otel-anomaly run

test: setup lint typecheck pytest  ## the whole suite, as CI runs it

# Kernels compiled by the suite are cached under build/ (in a folder per source digest, see
# processors/compiled.py), so an edit to one kernel file never leaves stale code in another's.
pytest: setup
	NUMBA_CACHE_DIR=$(CURDIR)/build/kernels $(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

# The packages live in exporter/ and processors/ but import as otel_anomaly.*:
# give mypy a folder with that layout.
typecheck: setup
	mkdir -p build/typecheck/otel_anomaly
	ln -sfn ../../../exporter build/typecheck/otel_anomaly/exporter
	ln -sfn ../../../processors build/typecheck/otel_anomaly/processors
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml \
		-p otel_anomaly.exporter -p otel_anomaly.processors

bench: setup  ## long benchmarks, not part of the suite (each prints a table)
	$(BIN)/python benchmarks/nab.py
	$(BIN)/python benchmarks/msmon.py
	$(BIN)/python benchmarks/incidents.py
	$(BIN)/python benchmarks/incidents.py --step 30  # the live regime: points every 30 s
	$(BIN)/python benchmarks/incidents.py --intervals  # request rates as live counters' (counts)
	$(BIN)/python benchmarks/low_counts.py
	$(BIN)/python benchmarks/traces.py
	$(BIN)/python benchmarks/histograms.py
	$(BIN)/python benchmarks/backtest_speed.py
	$(BIN)/python benchmarks/engine_speed.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/ingest.py --signal spans
	$(BIN)/python benchmarks/exposition.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/latency.py
	$(BIN)/python benchmarks/kernel_startup.py
	$(BIN)/python benchmarks/soak.py

clean:
	rm -rf build $(VENV) out
