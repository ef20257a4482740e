# Two commands a newcomer needs: `make serve` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup serve test lint default-metric-eval clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# promtool (for `promtool check metrics` in the e2e tests) comes unpacked from Debian's package.
$(BIN)/promtool: | $(STAMP)
	scripts/install-promtool $(BIN) || echo "warning: could not install promtool; its e2e check will be skipped outside CI"

setup: $(STAMP) $(BIN)/promtool

# Until the server lands (issue 3) this evaluates the shipped default metric on the held-out,
# length-neutral HaluEval QA split built from the pinned data wheel.
serve: setup default-metric-eval

default-metric-eval: setup
	$(BIN)/lunaserve data halueval --out build/data
	$(BIN)/lunaserve evaluate repository/context_adherence/1 --test build/data/qa_test_length_neutral.csv --out build/evaluation/qa_test_length_neutral

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy service
	$(BIN)/hadolint Dockerfile

test: setup lint
	$(BIN)/pytest

clean:
	rm -rf build $(VENV)
