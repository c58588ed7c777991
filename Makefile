# token.place: two commands, `make demo` and `make test`. Targets create .venv when it is missing;
# `make install` only does that (then use .venv/bin/tp-relay, tp-node, tp-gateway).
# pip's wheel cache is left on, so llama-cpp-python is compiled once per machine, not once per venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck pytest slow fuzz bench clean js

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[node,dev,traffic]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tp-demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected nothing: that is a failure here, never a silent pass.
pytest: $(STAMP)
	@$(BIN)/pytest -m "not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test: lint typecheck pytest

slow: $(STAMP)
	@$(BIN)/pytest -m slow; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: no slow tests yet"; exit 0; fi; exit $$rc

# Long randomized fuzz run of every fuzz test (each test runs TP_FUZZ_EXAMPLES examples).
fuzz: $(STAMP)
	TP_FUZZ_RANDOM=1 TP_FUZZ_EXAMPLES=20000 $(BIN)/pytest tests -k fuzz -p no:cacheprovider

# The simulator (docs/SIMULATION.md): 10,000 simulated machines for one simulated hour, measured figures in
# docs/BENCHMARKS.md. SIM_SEED picks the run; the report and plots go to sim-out/scale-10k.
.PHONY: sim-smoke sim-scale
SIM_SEED ?= 1
sim-smoke: $(STAMP)
	$(BIN)/tp-sim --scenario smoke --seed $(SIM_SEED) --out sim-out/smoke

sim-scale: $(STAMP)
	time $(BIN)/tp-sim --scenario scale-10k --seed $(SIM_SEED) --out sim-out/scale-10k

# The benchmark suite (docs/BENCHMARKS.md): separate processes on 127.0.0.1, 6-16 minutes on 2 cores (the
# idle_cpu rows wait up to ~6 minutes for a default-period network's warm-up); writes bench-results.json and
# prints the table. BENCH_ARGS="--only ttft,latency", "--response-shaping off" or "--quick" narrows it.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.suite $(BENCH_ARGS)

# Traffic analysis (docs/BENCHMARKS.md, "Traffic analysis"): a classifier guesses the topic of synthetic
# conversations from what an observer on the client's guard link and at a middle relay records, without and
# with each defence; prints AUPRC and each defence's cost (a few minutes on 2 cores). TRAFFIC_ARGS="--per-class 40".
.PHONY: traffic
traffic: $(STAMP)
	$(BIN)/python -m benchmarks.traffic $(TRAFFIC_ARGS)

# Mutation testing (docs/BENCHMARKS.md, "Mutation testing"): mutmut, set up in pyproject.toml [tool.mutmut], on
# tp_net/protocol/cells.py, tp_net/protocol/codec.py and tp_crypto/onion.py (about 10 minutes on 2 busy cores). It installs the
# `mutate` extra (not in dev: CI never runs this), works in mutants/, and lists every mutant that survived;
# `$(BIN)/mutmut show NAME` shows one.
.PHONY: mutate
mutate: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[mutate]'
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache mutants

# The sealed-request JS client (js/): writes its constants from Python (js/src/constants.generated.js), installs
# the locked npm packages and rebundles tp_gateway/static/sealed.bundle.js (+ its licenses), then runs its Node
# tests against both.
js: $(STAMP)
	$(BIN)/python -m tp_gateway.sealed_constants_js
	cd js && npm ci --no-audit --no-fund && npm run build && npm test

