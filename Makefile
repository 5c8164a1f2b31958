# One command each on a fresh machine: `make run`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test test-server test-client lint clean

install: $(STAMP)

# A compat editable install puts the checkout itself on sys.path, so twistd
# finds twisted/plugins/chatproto_plugin.py and edits take effect at once.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip 'setuptools>=68' wheel
	$(PY) -m pip install -q -e '.[client,test]' --config-settings editable_mode=compat
	touch $(STAMP)

run: install
	$(VENV)/bin/twistd -n --pidfile= chat $(ARGS)

test: test-server

# The server tests run under both runners the project supports.
test-server: install
	$(VENV)/bin/trial tests
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check chatproto tests twisted
	$(VENV)/bin/ruff format --check chatproto tests twisted

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp* .pytest_cache .hypothesis
