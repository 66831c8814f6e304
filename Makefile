# Set-up: `make demo` (whole pipeline on synthetic data) and `make test`. Both install first.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
# Results must not depend on the number of BLAS/OpenMP threads of the machine.
export OMP_NUM_THREADS ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install test demo bench gpu-check lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

test: install
	$(BIN)/python -m pytest -q

DEMO   ?= demo_out
# Knobs for a shorter run (tests/test_demo.py): extra arguments of each step.
DEMO_WORLD_ARGS  ?=
DEMO_ERFNET_ARGS ?=
DEMO_EOMT_ARGS   ?=
DEMO_SCORE_ARGS  ?= --bootstrap 200
D_ERF_H := 64
D_ERF   := $(DEMO)/erfnet_demo.pth
D_EOMT  := $(DEMO)/eomt_demo.ckpt
D_RUN   := --device cpu --no-progress
D_W     := $(DEMO)/world
D_C     := $(DEMO)/caches
D_STATS := $(DEMO)/id_stats
D_TEMPS := 0.5,0.75,1.1

# The whole pipeline on a procedural road world for both model families (see README
# "make demo"); steps whose output exists are skipped, `make clean` starts over. The two
# trainings run at once, one thread each (both cores of a small machine).
demo: install
	$(MAKE) --no-print-directory -j2 --output-sync=target $(D_ERF) $(D_EOMT)
	$(BIN)/extract run --model erfnet --dataset road_anomaly --data-root $(D_W)/anomaly --checkpoint $(D_ERF) \
	    --cache $(D_C)/erfnet/road_anomaly.zarr --input-height $(D_ERF_H) $(D_RUN)
	$(BIN)/extract run --model erfnet --dataset cityscapes_val --data-root $(D_W)/cityscapes --checkpoint $(D_ERF) \
	    --cache $(D_C)/erfnet/cityscapes_val.zarr --input-height $(D_ERF_H) $(D_RUN)
	$(BIN)/extract run --model eomt --dataset road_anomaly --data-root $(D_W)/anomaly --checkpoint $(D_EOMT) \
	    --cache $(D_C)/eomt/road_anomaly.zarr $(D_RUN)
	$(BIN)/extract run --model eomt --dataset cityscapes_val --data-root $(D_W)/cityscapes --checkpoint $(D_EOMT) \
	    --cache $(D_C)/eomt/cityscapes_val.zarr $(D_RUN)
	$(BIN)/analyze fit --cache $(D_C)/erfnet/cityscapes_val.zarr --temps $(D_TEMPS) --out $(D_STATS)/erfnet.json --no-progress
	$(BIN)/analyze fit --cache $(D_C)/eomt/cityscapes_val.zarr --temps $(D_TEMPS) --out $(D_STATS)/eomt.json --no-progress
	$(BIN)/analyze score --cache $(D_C)/erfnet/road_anomaly.zarr --cache $(D_C)/erfnet/cityscapes_val.zarr \
	    --cache $(D_C)/eomt/road_anomaly.zarr --cache $(D_C)/eomt/cityscapes_val.zarr \
	    --id-stats $(D_STATS)/erfnet.json --id-stats $(D_STATS)/eomt.json \
	    --scorers all --temps $(D_TEMPS) $(DEMO_SCORE_ARGS) --out $(DEMO)/results.parquet --no-progress
	$(BIN)/analyze report --results $(DEMO)/results.parquet --out $(DEMO)/report
	$(BIN)/analyze maps --cache $(D_C)/erfnet/road_anomaly.zarr --cache $(D_C)/eomt/road_anomaly.zarr \
	    --id-stats $(D_STATS)/erfnet.json --id-stats $(D_STATS)/eomt.json --scorer all --out $(DEMO)/maps
	@echo; cat $(DEMO)/report/table1.md; echo
	@$(BIN)/extract demo summary --results $(DEMO)/results.parquet
	@echo "figures: $(DEMO)/report/*.png (temperature_miou_eomt_query.png: query T moves EoMT's mIoU)"
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

# On a CUDA machine: the GPU tests and the benchmarks behind README "Extraction on a GPU".
gpu-check: install
	$(BIN)/python -m pytest -q tests/test_gpu.py
	$(BIN)/extract bench --model erfnet --device cuda --dtype fp16 --batch-size 8 --compression zstd3
	$(BIN)/extract bench --model erfnet --device cuda --dtype fp16 --batch-size 8 --compression lz4
	$(BIN)/extract bench --model eomt --device cuda --dtype bf16 --batch-size 4

# Style (ruff) and architecture (import-linter: the contracts in pyproject.toml).
lint: install
	$(BIN)/ruff check extract analyze schemas tests
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(DEMO) bench_out .pytest_cache
