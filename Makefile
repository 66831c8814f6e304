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
D_CKPT := $(DEMO)/erfnet_demo.pth
D_RA   := $(DEMO)/caches/erfnet/road_anomaly.zarr
D_CITY := $(DEMO)/caches/erfnet/cityscapes_val.zarr

# The whole pipeline on a procedural road world (see README "make demo"); steps whose
# output exists are skipped, `make clean` starts over.
demo: install $(D_CKPT)
	$(BIN)/extract run --model erfnet --dataset road_anomaly --data-root $(DEMO)/world/anomaly \
	    --checkpoint $(D_CKPT) --cache $(D_RA) --input-height 64 --no-progress
	$(BIN)/extract run --model erfnet --dataset cityscapes_val --data-root $(DEMO)/world/cityscapes \
	    --checkpoint $(D_CKPT) --cache $(D_CITY) --input-height 64 --no-progress
	$(BIN)/analyze score --cache $(D_RA) --cache $(D_CITY) --scorers all --temps 0.5,0.75,1.1 \
	    --bootstrap 200 --out $(DEMO)/results.parquet --no-progress
	$(BIN)/analyze report --results $(DEMO)/results.parquet --out $(DEMO)/report
	$(BIN)/analyze maps --cache $(D_RA) --scorer all --out $(DEMO)/maps
	@echo; cat $(DEMO)/report/table1.md; echo
	@$(BIN)/python -c "import pandas as pd; f = pd.read_parquet('$(DEMO)/results_frames.parquet'); \
	f = f[(f.scorer == 'msp') & (f.temperature == 1.0)]; \
	print(f'chance level (anomaly pixel fraction, the AuPRC of a random scorer): {100 * f.n_pos.sum() / (f.n_pos.sum() + f.n_neg.sum()):.2f} %')"
	@echo "figures: $(DEMO)/report/*.png, anomaly maps: $(DEMO)/maps/panel.png"

$(DEMO)/world/.done:
	$(BIN)/extract demo world --out $(DEMO)/world
	touch $@

$(D_CKPT): $(DEMO)/world/.done
	$(BIN)/extract demo train --data $(DEMO)/world --out $@.tmp && mv $@.tmp $@

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
