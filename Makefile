# Two entry points for a fresh clone: `make demo` and `make test`. Both build .venv once.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck pytest lightning-2.5 bench integration clean

$(STAMP): requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	# compat mode: a plain path entry, not an import hook that every Python start in
	# this venv (the trainer's too) would pay for.
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation \
		--config-settings editable_mode=compat -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/train-supervisor demo

test: lint typecheck pytest lightning-2.5

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collects nothing; make treats any non-zero exit as failure.
# Two workers, one test file each at a time: most of the suite waits on child processes.
pytest: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The edit loop: everything not marked slow (e2e/ and the tests that run the real CLI).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow" -q

# GPT-SoVITS s1 on the real Lightning before its weights-only change (the suite above runs
# the pinned 2.6): Lightning 2.5.6 alone, put ahead of the venv's on PYTHONPATH (its other
# requirements are the venv's). About 15 s.
LIGHTNING_25 := .lightning-2.5.6
$(LIGHTNING_25)/.installed: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps --target $(LIGHTNING_25) pytorch-lightning==2.5.6
	touch $@

lightning-2.5: $(LIGHTNING_25)/.installed
	LIGHTNING_EXPECTED=2.5.6 PYTHONPATH=$(abspath $(LIGHTNING_25)) $(BIN)/python -m pytest -q -rs tests/adapters/test_lightning.py

bench: $(STAMP)
	$(BIN)/python bench/relaunch_gap.py
	$(BIN)/python bench/idle_footprint.py
	$(BIN)/python bench/validate_big.py
	$(BIN)/python bench/verdict_latency.py
	$(BIN)/python bench/detection.py
	$(BIN)/python bench/heartbeat_client.py
	$(BIN)/python bench/tfevents_read.py
	$(BIN)/python bench/cli_startup.py

# The real F5-TTS trainer under faults, and a plain restart loop as the control (not part
# of `make test`): builds the trainer's own pinned venv once (about 3 minutes, 2.4 GB).
F5_VENV ?= .venv-f5
$(F5_VENV)/.installed: integration/f5tts/requirements.txt
	$(PYTHON) -m venv $(F5_VENV)
	$(F5_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(F5_VENV)/bin/python -m pip install --quiet -r integration/f5tts/requirements.txt
	touch $@

integration: $(STAMP) $(F5_VENV)/.installed
	$(BIN)/python integration/f5tts/run.py --venv $(F5_VENV)

clean:
	rm -rf $(VENV) $(LIGHTNING_25) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
