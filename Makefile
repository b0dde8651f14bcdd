# The two commands of the README: `make demo` and `make test`. Both install into .venv first.
VENV ?= .venv
PYTHON ?= python3
CORES ?= 2
BIN := $(VENV)/bin
# Rules call `python -m workflow.<stage>`: the project environment comes first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test lint lock clean-demo

install: $(VENV)/.installed

# The exact versions of envs/cpu.lock.txt (a constraints file): every fresh clone gets the same environment.
$(VENV)/.installed: pyproject.toml envs/cpu.lock.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c envs/cpu.lock.txt -e '.[dev]'
	touch $@

# Update the lock on purpose (resolves today's versions; installs nothing): then `make install test demo`, and
# commit envs/*.lock.txt and envs/*.yaml with the numbers they give.
lock: install
	$(BIN)/python scripts/lock.py

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
