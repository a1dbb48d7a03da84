# bitswarm — thin aliases to the venv's python/pytest. Every target builds the venv first.
PY_SYS  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
export AMARANTH_USE_YOSYS := builtin
JOBS    ?= 2

.PHONY: venv demo test test-long test-verilator synth-report bitstream-icebreaker bitstream-ulx3s bitstream-icebreaker-cnn bitstream-ulx3s-cnn bench-boards bench-resources bench bench-train bench-ternary bench-zoo bench-sim bench-onchip bench-kernel bench-scale lint clean

venv: $(STAMP)

# (Re)create the project-local environment whenever pyproject.toml changes; reinstalling also
# recompiles the popcount kernel (setup.py builds bitswarm.sim._popcount in place).
$(STAMP): pyproject.toml setup.py sim/_popcount.c
	@test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" "setuptools>=77,<81" wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m bitswarm demo --overwrite

test: $(STAMP)
	$(PY) -m pytest -q

test-long: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

test-verilator: $(STAMP)
	$(PY) -m pytest -q -m verilator

synth-report: $(STAMP)
	$(PY) -m pytest -q -m synth && $(PY) bench/synth_report.py

# Board builds (YoWASP place and route, minutes). Models are trained once into out/boards/.
BOARDS_DIR := out/boards
# bench/bench_boards.py PINNED: the trainer settings the board results were measured with
BOARD_PINNED := --batch-size 128 --opt homeostasis_shift=12
$(BOARDS_DIR)/digits-64-512-10.bsm: $(STAMP)
	$(PY) -m bitswarm train --dataset digits --arch 64-512-10 $(BOARD_PINNED) --out $@ --quiet --no-plots --overwrite
$(BOARDS_DIR)/mnist5k-sfc-b1.bsm: $(STAMP)
	$(PY) -m bitswarm train --dataset mnist5k --arch 784-256-256-256-10 --input-bits 1 --epochs 20 $(BOARD_PINNED) --out $@ --quiet --no-plots --overwrite
# CNNs: a digits CNN for the iCEBreaker; bench/bench_train.py's Fashion CNN for the ULX3S
# (Fashion-MNIST from the Debian package dataset-fashion-mnist; ~15 min on 2 cores).
$(BOARDS_DIR)/digits-cnn.bsm: $(STAMP)
	$(PY) -m bitswarm train --dataset digits --arch 1x8x8-c8k3p1-mp2-10 --epochs 15 $(BOARD_PINNED) --batch-size 64 --out $@ --quiet --no-plots --overwrite
$(BOARDS_DIR)/fashion-cnn.bsm: $(STAMP)
	$(PY) -m bitswarm train --dataset fashion --arch 1x28x28-c32k3p1-mp2-512-10 --epochs 3 $(BOARD_PINNED) --batch-size 64 --flip-threshold 32 --out $@ --quiet --no-plots --overwrite

# Default folds: the optimizer's for the board (bitswarm fold MODEL --board B).
bitstream-icebreaker: $(BOARDS_DIR)/digits-64-512-10.bsm
	$(PY) -m bitswarm bitstream $< --board icebreaker -o $(BOARDS_DIR)/icebreaker --json --overwrite

bitstream-ulx3s: $(BOARDS_DIR)/mnist5k-sfc-b1.bsm
	$(PY) -m bitswarm bitstream $< --board ulx3s -o $(BOARDS_DIR)/ulx3s --json --overwrite

# The UP5K places the digits CNN with the optimizer's fold for 50 % of its LUTs (not the default 75 %).
bitstream-icebreaker-cnn: $(BOARDS_DIR)/digits-cnn.bsm
	$(PY) -m bitswarm fold $< --board icebreaker --fill 0.5 -o $(BOARDS_DIR)/digits-cnn.icebreaker.fold.json --overwrite
	$(PY) -m bitswarm bitstream $< --board icebreaker --fold $(BOARDS_DIR)/digits-cnn.icebreaker.fold.json --clock-mhz 30 -o $(BOARDS_DIR)/icebreaker-cnn --json --overwrite

bitstream-ulx3s-cnn: $(BOARDS_DIR)/fashion-cnn.bsm
	$(PY) -m bitswarm bitstream $< --board ulx3s --clock-mhz 60 -o $(BOARDS_DIR)/ulx3s-cnn --json --overwrite

bench-boards: $(STAMP)
	$(PY) bench/bench_boards.py --keep $(BOARDS_DIR)

bench-resources: $(STAMP)
	$(PY) bench/calibrate_resources.py --fit

bench: bench-train bench-sim

bench-train: $(STAMP)
	$(PY) bench/bench_train.py

# Ternary (SPEC §8.1) vs binary S=1 vs S=2 (equal storage), golden rule, mnist5k and Fashion.
bench-ternary: $(STAMP)
	$(PY) bench/bench_ternary.py

bench-zoo: $(STAMP)
	$(PY) bench/bench_zoo.py

bench-kernel: $(STAMP)
	$(PY) bench/bench_kernel.py

bench-sim: $(STAMP)
	$(PY) bench/bench_sim.py

bench-onchip: $(STAMP)
	$(PY) bench/bench_onchip.py

# Data-parallel training on 1 and 2 local processes (torchrun, gloo) + the all-reduce cost model.
bench-scale: $(STAMP)
	$(PY) bench/bench_scale.py

lint: $(STAMP)
	$(PY) -m ruff check .

# The Verilator build cache first (it may live in $$BITSWARM_BUILD_DIR), while the venv exists.
clean:
	-test -x $(PY) && $(PY) -m bitswarm clean
	rm -rf $(VENV) build *.egg-info .pytest_cache sim_build sim/_popcount*.so
