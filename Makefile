# Set-up: `make demo` (whole pipeline on synthetic data) and `make test`. Both install first,
# from the lock of the interpreter's Python version (lock-py311.txt, lock-py312.txt).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PYVER  := $(shell $(PYTHON) -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")' 2>/dev/null)
LOCK   ?= lock-py$(PYVER).txt
# The lock pins these: the releases pip takes from the local disk on the development machine.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
LOCK_EXTRAS := --extra dev --extra bench --extra docs --extra hf
# Results must not depend on the number of BLAS/OpenMP threads of the machine.
export OMP_NUM_THREADS ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install test test-newest lock dist wheel-check demo bench gpu-check lint docs clean

install: $(VENV)/.installed

# LOCK=newest: the newest releases pip resolves from pyproject.toml's ranges instead of a lock
ifeq ($(LOCK),newest)
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev,bench,docs,hf]'
	touch $@
else
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@
endif

$(LOCK):
	@echo "no lock file $(LOCK) for $(PYTHON) (Python $(PYVER)): Python 3.11 and 3.12 are locked; see README Install"; exit 1

test: install
	$(BIN)/python -m pytest -q

# The suite on the newest releases pip resolves today (no lock), in a venv of its own.
VENV_NEWEST ?= .venv-newest
test-newest:
	$(MAKE) --no-print-directory test VENV=$(VENV_NEWEST) LOCK=newest

# Regenerate both lock files from pyproject.toml's ranges (Linux x86-64, the torch pins above).
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q 'uv>=0.5'
	printf '%s\n' $(TORCH_PINS) > $(VENV)/torch-pins.txt
	for v in 3.11 3.12; do \
	  $(BIN)/python -m uv pip compile -q pyproject.toml $(LOCK_EXTRAS) --python-version $$v \
	    --python-platform x86_64-manylinux_2_28 --constraint $(VENV)/torch-pins.txt \
	    --custom-compile-command 'make lock' -o lock-py$$(echo $$v | tr -d .).txt || exit 1; \
	done

# The sdist and the wheel (the wheel carries data_manifest.yaml: schemas/_build.py).
dist: install
	rm -rf dist
	$(BIN)/python -m build -q -o dist . >/dev/null

# The wheel as a user installs it: a fresh venv of PYTHON_WHEEL, the whole small pipeline from
# an unrelated folder (.ci/wheel_pipeline.sh).
PYTHON_WHEEL ?= $(PYTHON)
wheel-check: dist
	.ci/wheel_pipeline.sh $(PYTHON_WHEEL) dist

DEMO   ?= demo_out
# Knobs for a shorter run (tests/test_demo.py): extra arguments of each step.
DEMO_WORLD_ARGS  ?=
DEMO_ERFNET_ARGS ?=
DEMO_EOMT_ARGS   ?=
DEMO_SCORE_ARGS  ?= --bootstrap 200
D_ERF_H := 64
D_ERF   := $(DEMO)/erfnet_demo.pth
D_EOMT  := $(DEMO)/eomt_demo.ckpt
D_RUN   := --device cpu
D_W     := $(DEMO)/world
D_C     := $(DEMO)/caches
D_STATS := $(DEMO)/id_stats
D_TEMPS := 0.5,0.75,1.1

# The whole pipeline on a procedural road world for both model families (see README
# "make demo"); steps whose output exists are skipped, `make clean` starts over. The two
# trainings run at once, one thread each (both cores of a small machine); their progress lines
# interleave as they come, each prefixed with its model (no --output-sync, which would hold
# every line of a training back until it ends). Extraction and scoring show their progress bars.
demo: install
	$(MAKE) --no-print-directory -j2 $(D_ERF) $(D_EOMT)
	$(BIN)/extract run --model erfnet --dataset road_anomaly --data-root $(D_W)/anomaly --checkpoint $(D_ERF) \
	    --cache $(D_C)/erfnet/road_anomaly.zarr --input-height $(D_ERF_H) $(D_RUN)
	$(BIN)/extract run --model erfnet --dataset cityscapes_val --data-root $(D_W)/cityscapes --checkpoint $(D_ERF) \
	    --cache $(D_C)/erfnet/cityscapes_val.zarr --input-height $(D_ERF_H) $(D_RUN)
	$(BIN)/extract run --model eomt --dataset road_anomaly --data-root $(D_W)/anomaly --checkpoint $(D_EOMT) \
	    --cache $(D_C)/eomt/road_anomaly.zarr $(D_RUN)
	$(BIN)/extract run --model eomt --dataset cityscapes_val --data-root $(D_W)/cityscapes --checkpoint $(D_EOMT) \
	    --cache $(D_C)/eomt/cityscapes_val.zarr $(D_RUN)
	$(BIN)/analyze fit --cache $(D_C)/erfnet/cityscapes_val.zarr --temps $(D_TEMPS) --out $(D_STATS)/erfnet.json
	$(BIN)/analyze fit --cache $(D_C)/eomt/cityscapes_val.zarr --temps $(D_TEMPS) --out $(D_STATS)/eomt.json
	$(BIN)/analyze score --cache $(D_C)/erfnet/road_anomaly.zarr --cache $(D_C)/erfnet/cityscapes_val.zarr \
	    --cache $(D_C)/eomt/road_anomaly.zarr --cache $(D_C)/eomt/cityscapes_val.zarr \
	    --id-stats $(D_STATS)/erfnet.json --id-stats $(D_STATS)/eomt.json \
	    --scorers all --temps $(D_TEMPS) $(DEMO_SCORE_ARGS) --out $(DEMO)/results.parquet
	$(BIN)/analyze report --results $(DEMO)/results.parquet --out $(DEMO)/report --html \
	    --cache $(D_C)/erfnet/road_anomaly.zarr --cache $(D_C)/eomt/road_anomaly.zarr
	$(BIN)/analyze maps --cache $(D_C)/erfnet/road_anomaly.zarr --cache $(D_C)/eomt/road_anomaly.zarr \
	    --id-stats $(D_STATS)/erfnet.json --id-stats $(D_STATS)/eomt.json --scorer all --out $(DEMO)/maps
	@echo; cat $(DEMO)/report/table1.md; echo
	@$(BIN)/extract demo summary --results $(DEMO)/results.parquet
	@echo "figures: $(DEMO)/report/*.png (temperature_eomt_query_*.png: query T also moves EoMT's mIoU)"
	@echo "the whole report in one page (tables, curves, frames): $(abspath $(DEMO)/report/index.html)"
	@echo "anomaly maps of both models: $(DEMO)/maps/panel.png"

$(D_W)/.done:
	$(BIN)/extract demo world --out $(D_W) $(DEMO_WORLD_ARGS)
	touch $@

$(D_ERF): $(D_W)/.done
	$(BIN)/extract demo train --data $(D_W) --out $@.tmp --height $(D_ERF_H) $(DEMO_ERFNET_ARGS) && mv $@.tmp $@

$(D_EOMT): $(D_W)/.done
	$(BIN)/extract demo train-eomt --data $(D_W) --out $@.tmp $(DEMO_EOMT_ARGS) && mv $@.tmp $@

bench: install
	$(BIN)/python -m pip install -q 'ood-metrics==0.2.9'
	$(BIN)/python -m analyze.bench

# On a CUDA machine: the GPU tests and the benchmarks behind docs/speed.md "Extraction on a GPU".
gpu-check: install
	$(BIN)/python -m pytest -q tests/test_gpu.py
	$(BIN)/extract bench --model erfnet --device cuda --dtype fp16 --batch-size 8 --compression zstd3
	$(BIN)/extract bench --model erfnet --device cuda --dtype fp16 --batch-size 8 --compression lz4
	$(BIN)/extract bench --model eomt --device cuda --dtype bf16 --batch-size 4

# Style (ruff), architecture (import-linter: the contracts in pyproject.toml) and types (mypy:
# the public API and the packages under it, [tool.mypy] in pyproject.toml).
lint: install
	$(BIN)/ruff check extract analyze schemas tests
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

# The user guide (docs/, mkdocs.yml) into site/; strict: a broken link or anchor, or a page
# missing from the navigation, fails (and so fails .ci/run).
docs: install
	$(BIN)/mkdocs build --strict --quiet --site-dir site

clean:
	rm -rf $(DEMO) bench_out .pytest_cache site
