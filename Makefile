# bitswarm — thin aliases to the venv's python/pytest. Every target builds the venv first.
PY_SYS  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
export AMARANTH_USE_YOSYS := builtin
JOBS    ?= 2

.PHONY: venv demo test test-long test-verilator synth-report bench bench-train bench-zoo bench-sim bench-onchip bench-kernel lint clean

venv: $(STAMP)

# (Re)create the project-local environment whenever pyproject.toml changes; reinstalling also
# recompiles the popcount kernel (setup.py builds bitswarm.sim._popcount in place).
$(STAMP): pyproject.toml setup.py sim/_popcount.c
	@test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" "setuptools>=77" wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m bitswarm demo

test: $(STAMP)
	$(PY) -m pytest -q

test-long: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

test-verilator: $(STAMP)
	$(PY) -m pytest -q -m verilator

synth-report: $(STAMP)
	$(PY) -m pytest -q -m synth && $(PY) bench/synth_report.py

bench: bench-train bench-sim

bench-train: $(STAMP)
	$(PY) bench/bench_train.py

bench-kernel: $(STAMP)
	$(PY) bench/bench_kernel.py

bench-sim: $(STAMP)
	$(PY) bench/bench_sim.py

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache sim_build sim/_popcount*.so
