# The two commands of the README: `make demo` and `make test`. Both install into .venv first.
VENV ?= .venv
PYTHON ?= python3
CORES ?= 2
BIN := $(VENV)/bin
# Rules call `python -m workflow.<stage>`: the project environment comes first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test lint clean-demo

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

# Generate the synthetic demo and run every stage end to end on CPU, then build the HTML report.
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --cores $(CORES)
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --cores 1 --report results/report.html

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check workflow tests benchmarks scripts
	$(BIN)/snakefmt --check Snakefile rules
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --lint

clean-demo:
	rm -rf resources/demo results/* logs .snakemake/metadata
