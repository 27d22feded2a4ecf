# The two commands of the README:
#   make run    survey, build and benchmark this machine with parameters/default.yaml
#   make test   the test suite (what .ci/run calls)
# Both install what they need first (system packages when root, a virtualenv in .venv).

PARAMS ?= parameters/default.yaml
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run plan test setup lab clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

run: setup
	$(VENV)/bin/aios run --params $(PARAMS)

plan: setup
	$(VENV)/bin/aios plan --params $(PARAMS)

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lab: setup
	$(VENV)/bin/pip install -q -e '.[lab]' && $(VENV)/bin/jupyter lab notebooks/

clean-venv:
	rm -rf $(VENV)
