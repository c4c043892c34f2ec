# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tickpipe-installed
PYTEST_ARGS ?=

.PHONY: demo test install bench clean

demo: $(STAMP)
	$(VENV)/bin/tickpipe demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

install: $(STAMP)

bench: $(STAMP)
	$(PY) -m bench.run_all

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-install whenever the project's metadata changes.
$(STAMP): pyproject.toml tests/fidelity-requirements.txt tests/fidelity-nodeps.txt | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet -r tests/fidelity-requirements.txt
	$(PY) -m pip install --quiet --no-deps -r tests/fidelity-nodeps.txt
	# socket.io 1.x's own Node client, for the Market Prophit fidelity test (skipped where npm is missing)
	if command -v npm >/dev/null; then npm install --silent --no-audit --no-fund --prefix $(VENV)/node_socketio1 socket.io-client@1.7.4; fi
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
