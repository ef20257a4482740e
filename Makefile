# Two commands a newcomer needs: `make serve` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup serve test lint default-metric default-metric-eval clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# promtool (for `promtool check metrics` in the e2e tests) comes unpacked from Debian's package.
$(BIN)/promtool: | $(STAMP)
	scripts/install-promtool $(BIN) || echo "warning: could not install promtool; its e2e check will be skipped outside CI"

setup: $(STAMP) $(BIN)/promtool

# Serves every metric in repository/ (the shipped context_adherence) at 127.0.0.1:8000.
serve: setup
	$(BIN)/lunaserve serve --repository repository --host 127.0.0.1 --port 8000

# The shipped default metric's quality on the held-out, length-neutral HaluEval QA split.
default-metric-eval: setup
	$(BIN)/lunaserve data halueval --out build/data
	$(BIN)/lunaserve evaluate repository/context_adherence/1 --test build/data/qa_test_length_neutral.csv --out build/evaluation/qa_test_length_neutral

# Rebuilds repository/context_adherence/1 from the pinned downloads, seeded (README: how long it took).
# Training rows never enter the repository: they live under build/.
DATA := build/data
CKPT := build/checkpoints/context_adherence-1
MIX_ROWS ?= 1500
SENTENCE_PAIRS ?= 0
EPOCHS ?= 1
default-metric: setup
	$(BIN)/lunaserve base fetch
	$(BIN)/lunaserve data halueval --out $(DATA) --seed 0 --mix-source-rows $(MIX_ROWS) --sentence-pairs $(SENTENCE_PAIRS)
	$(BIN)/lunaserve data check --kind train $(DATA)/qa_train_mix.csv --against $(DATA)/qa_test_length_neutral.csv
	$(BIN)/lunaserve finetune --base build/downloads/minilm --train $(DATA)/qa_train_mix.csv --eval $(DATA)/qa_eval.csv \
	  --out $(CKPT) --epochs $(EPOCHS) --lr 5e-5 --batch-size 16 --max-train-tokens 384 --seed 0
	$(BIN)/lunaserve export $(CKPT) --eval $(DATA)/qa_eval.csv --repository repository --force \
	  --evidence n_missing_content --card-notes specs/context_adherence.card.yaml
	$(BIN)/lunaserve evaluate repository/context_adherence/1 --test $(DATA)/qa_test_length_neutral.csv \
	  --out build/evaluation/qa_test_length_neutral --record qa_test_length_neutral \
	  --description "Held-out HaluEval QA (contexts never trained on), subsampled so both labels have the same answer-length distribution: length alone scores ROC-AUC 0.5."
	$(BIN)/lunaserve evaluate repository/context_adherence/1 --test $(DATA)/dialogue.csv \
	  --out build/evaluation/dialogue --record dialogue \
	  --description "Out of domain: HaluEval dialogue (knowledge-grounded chat, CC BY-NC), never trained or tuned on; not length-neutral (length alone scores about 0.69)."
	$(BIN)/lunaserve evaluate repository/context_adherence/1 --test $(DATA)/summarization_long.csv \
	  --out build/evaluation/summarization_long --record summarization_long \
	  --description "Out of domain, long contexts: HaluEval summarization (news documents, median about 600 words, scored in windows), never trained or tuned on."

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy service
	$(BIN)/hadolint Dockerfile

test: setup lint
	$(BIN)/pytest

clean:
	rm -rf build $(VENV)
