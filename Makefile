# Two commands from a fresh machine: `make demo` and `make test`.
# Each creates .venv when it is missing and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.matryoshka-installed

.PHONY: demo test browser lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/matryoshka demo

# The browser tests (tests/test_page.py) drive Debian's chromium through Playwright (which cannot
# download a browser of its own here): install the package when no chromium is found, as root or
# through sudo; MATRYOSHKA_CHROMIUM points at another one, MATRYOSHKA_SKIP_BROWSER=1 skips them.
browser:
	@if [ "$$MATRYOSHKA_SKIP_BROWSER" = 1 ] || [ -x "$$MATRYOSHKA_CHROMIUM" ] || command -v chromium >/dev/null; then \
	  exit 0; \
	elif ! command -v apt-get >/dev/null; then \
	  echo "make: the browser tests need chromium: install it, set MATRYOSHKA_CHROMIUM to its path, or set MATRYOSHKA_SKIP_BROWSER=1 to skip them" >&2; exit 1; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	elif command -v sudo >/dev/null; then \
	  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
	  echo "make: the browser tests need chromium: run 'apt-get install chromium' as root, or set MATRYOSHKA_SKIP_BROWSER=1 to skip them" >&2; exit 1; \
	fi

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/train_overhead.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info
