# Two entry points for a fresh machine; each installs whatever is missing by itself.
#   make demo   -> runs the whole pipeline on a small bundled dataset
#   make test   -> runs the test suite (this is what .ci/run calls)
PYTHON ?= python3
VENV   ?= .venv
# The CPU wheel of this pin is what this project's machines install; elsewhere override it,
# e.g. `make demo TORCH_SPEC=torch` to take your platform's default build.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test install browser clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

demo: install
	$(BIN)/imgclf demo

test: install browser
	$(BIN)/python -m pytest -q

# The report's browser test drives Debian's Chromium (Playwright never downloads a browser here).
# As root with apt it is installed when missing; elsewhere that one test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the report's browser test"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "no chromium: the report's browser test will be skipped"; fi; }

clean:
	rm -rf $(VENV) imgclf-demo .pytest_cache
