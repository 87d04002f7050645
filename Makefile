# Set-up and the two commands of the README. Everything a fresh Debian machine needs is
# installed here: Debian packages when missing (we run as root on lane PCs and in CI),
# then a virtual environment with the project and its test tools.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APT_PACKAGES := tesseract-ocr fonts-ocr-b tmux chromium chromium-driver postgresql \
		pcscd vsmartcard-vpcd libpcsclite-dev swig build-essential

.PHONY: setup sim test lint typecheck imports clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV) || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

# The main job: a simulated lane end to end.
sim: setup
	$(BIN)/python -m gate.demo

# The tests: lint, types, then the suite.
test: setup lint typecheck imports
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy

# Who may import whom: the contracts in pyproject.toml ([tool.importlinter]).
imports: setup
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
