# The two commands of the README:
#   make demo   set everything up (venv, pinned deps, pretrained assets) and run the demo
#   make test   set everything up and run the whole test suite (what CI runs)
# Both are idempotent: a second run only re-does what changed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stylerig-installed
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: env assets demo test test-fast clean-env

env: $(STAMP)

# torch and torchvision are pinned together in constraints.txt: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	# The OpenFace oracle of the tests; --no-deps because its declared requirements drag in another torch.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps pyfaceau==1.4.1
	@touch $@

assets: env
	$(BIN)/stylerig-au pretrained fetch

demo: assets
	$(BIN)/stylerig-au demo --out $(DEMO_OUT)

test: env
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: env
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

clean-env:
	rm -rf $(VENV)
