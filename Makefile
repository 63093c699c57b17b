# make demo: venv + install + pack synthetic faces + train briefly (training writes the report); make test: the test suite.
# The demo trains with 1 process x 2 loader workers, hence --readers 2 (10 shards suffice).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.facegan-installed
DEMO_SHARDS ?= shards/synthetic-32
DEMO_RUN ?= runs/demo

.PHONY: install demo test lint bench clean

# uv installs the same pinned set as pip in ~20 s instead of ~80 s (torch's CUDA wheels are ~5 GB
# unpacked); INSTALLER=pip uses pip alone, e.g. where only pip's configured index can be reached.
# --compile-bytecode as pip does: without .pyc files (and with PYTHONDONTWRITEBYTECODE set, as on
# CI machines) every process compiles torch, wandb and the rest again: 9.9 s to import them, not 3.9.
INSTALLER ?= uv

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(INSTALLER),uv)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]' -c constraints.txt
else
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' -c constraints.txt
endif
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python -m facegan.pack synthetic --num 10000 --size 32 --out $(DEMO_SHARDS) --overwrite --readers 2
	$(BIN)/python facegan/train.py --preset demo --data $(DEMO_SHARDS) --run-dir $(DEMO_RUN) --resume none
	@echo "demo: sample grids in $(DEMO_RUN)/samples/, metrics in $(DEMO_RUN)/metrics.jsonl, report in $(DEMO_RUN)/report/index.html"

test: install
	$(BIN)/ruff check facegan tests bench
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check facegan tests bench

bench: install
	$(BIN)/python bench/loader.py
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/fid.py

clean:
	rm -rf $(VENV) .pytest_cache
