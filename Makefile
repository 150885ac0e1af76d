# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Keep a torch the user already has (the venv then sees it); otherwise install the CPU build.
TORCH  ?= torch==2.13.0
PIP    := $(BIN)/python -m pip install -q --disable-pip-version-check

.PHONY: demo test bench venv browser clean

$(BIN)/python:
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "xlmr: keeping the torch of $(PYTHON) ($$($(PYTHON) -c 'import torch; print(torch.__version__)'))"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
		echo "xlmr: no torch found, installing $(TORCH)"; \
		$(PIP) "$(TORCH)"; \
	fi

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(PIP) -e ".[$*]"
	@touch $@

venv: $(VENV)/.installed-test

demo: $(VENV)/.installed-demo
	$(BIN)/xlmr demo

# The browser test drives Chromium: install Debian's chromium and chromium-driver when they are
# missing and apt-get can run (as root). Anywhere else this does nothing and that one test skips.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "xlmr: installing chromium and chromium-driver for the browser test"; \
		{ DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 \
		|| echo "xlmr: could not install chromium (offline?); the browser test will skip"; \
	fi

# Two pytest workers (pytest-xdist), one torch thread each: the small tests are bound by Python, not
# by matrix products, so two processes finish sooner than one process with two threads.
TEST_WORKERS ?= 2
test: $(VENV)/.installed-test browser
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

bench: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m benchmark

clean:
	rm -rf $(VENV) runs .pytest_cache
