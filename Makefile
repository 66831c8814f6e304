# Set-up: `make demo` (whole pipeline on synthetic data) and `make test`. Both install first.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
# Results must not depend on the number of BLAS/OpenMP threads of the machine.
export OMP_NUM_THREADS ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install test demo bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/python -m extract.demo_pipeline --out demo_out

bench: install
	$(BIN)/python -m analyze.bench

lint: install
	$(BIN)/python -m pip install -q ruff
	$(BIN)/ruff check extract analyze schemas tests

clean:
	rm -rf demo_out bench_out .pytest_cache
