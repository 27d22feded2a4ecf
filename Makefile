# The two commands of the README:
#   make run    survey, build and benchmark this machine with parameters/default.yaml
#   make test   the test suite (what .ci/run calls)
# Both install what they need first (system packages when root, a virtualenv in .venv).
# Stepping through by hand: make lab   (JupyterLab on a session copy of the notebooks; see README)
# and for developers: make notebooks  (notebooks/NN_*.ipynb from their sources notebooks/src/NN_*.py)

PARAMS ?= parameters/default.yaml
PHASES ?=
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run plan test setup lab notebooks clean-venv

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

# jupytext reads the percent-format source. --update keeps the existing notebook's metadata
# (kernelspec synapse) and each unchanged cell's id, so a rebuild rewrites only what changed.
# A new notebook gets the kernel and no jupytext metadata (the .py has no header to pair with).
notebooks: setup
	@set -e; for src in notebooks/src/*.py; do \
	  nb=notebooks/$$(basename $$src .py).ipynb; \
	  if [ -e $$nb ]; then \
	    $(VENV)/bin/jupytext --quiet --update --to ipynb --output $$nb $$src; \
	  else \
	    $(VENV)/bin/jupytext --quiet --to ipynb --set-kernel synapse \
	      --update-metadata '{"jupytext": null, "language_info": {"name": "python"}}' --output $$nb $$src; \
	  fi; \
	  echo "wrote $$nb"; \
	done

# A JupyterLab session on copies of the notebooks (outputs/<machine>/<run-id>-lab/), on loopback
# without a browser (root and headless machines included); prints the URL and an SSH tunnel line.
# make lab PARAMS=parameters/my-box.yaml PHASES="01 02"
lab: setup
	$(VENV)/bin/aios lab --params $(PARAMS) $(PHASES)

clean-venv:
	rm -rf $(VENV)
