# Two commands a newcomer needs: `make serve` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup serve test lint default-metric default-metric-eval default-metric-loto clean

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

# Rebuilds repository/context_adherence/2 (the default metric) from the pinned downloads, seeded
# (README: how long it took). Version 1 stays in the repository as shipped (git history: its recipe).
# Training rows never enter the repository: they live under build/.
DATA := build/data
CKPT := build/checkpoints/context_adherence-2
TRAIN_CONTEXTS ?= qa=800,dialogue=1200,summarization=400
COUNTERFACTUAL_PAIRS ?= 1500
EPOCHS ?= 2
QUANTIZATION ?= embeddings
EVIDENCE ?= share_missing_content weakest_sentence_missing share_missing_names share_missing_numbers share_novel_bigrams share_polarity_flipped
TEST_SETS := qa_test dialogue_test summarization_test
default-metric: setup
	$(BIN)/lunaserve base fetch
	$(BIN)/lunaserve data halueval --out $(DATA) --seed 0 --train-contexts $(TRAIN_CONTEXTS) --counterfactual-pairs $(COUNTERFACTUAL_PAIRS)
	for t in $(TEST_SETS) eval; do $(BIN)/lunaserve data check --kind train $(DATA)/train.csv --against $(DATA)/$$t.csv || exit 1; done
	$(BIN)/lunaserve finetune --base build/downloads/minilm --train $(DATA)/train.csv --eval $(DATA)/eval.csv \
	  --out $(CKPT) --epochs $(EPOCHS) --lr 5e-5 --batch-size 16 --max-train-tokens 384 --seed 0
	$(BIN)/lunaserve export $(CKPT) --eval $(DATA)/eval.csv --repository repository --force \
	  --quantization $(QUANTIZATION) --evidence $(EVIDENCE) --threshold-from-eval --card-notes specs/context_adherence.card.yaml
	$(MAKE) default-metric-eval

# The default metric's quality on the held-out sets, recorded into its manifest and card.
default-metric-eval: setup
	$(BIN)/lunaserve evaluate repository/context_adherence/2 --test $(DATA)/qa_test.csv --out build/evaluation/qa_test \
	  --record halueval_qa --description "HaluEval QA, test-split contexts (never trained or tuned on), 300 length-matched pairs (responses within 5 words)."
	$(BIN)/lunaserve evaluate repository/context_adherence/2 --test $(DATA)/dialogue_test.csv --out build/evaluation/dialogue_test \
	  --record halueval_dialogue --description "HaluEval dialogue, test-split contexts, 300 length-matched pairs (responses within 5 words)."
	$(BIN)/lunaserve evaluate repository/context_adherence/2 --test $(DATA)/summarization_test.csv --out build/evaluation/summarization_test \
	  --record halueval_summarization --description "HaluEval summarization (news documents, median ~570 words, scored in windows), test-split contexts, 300 length-matched pairs."
	$(BIN)/lunaserve evaluate repository/context_adherence/2 --test models/dev_sets/rag_pairs.csv --out build/evaluation/rag_pairs \
	  --record handwritten_rag --description "Our hand-written RAG-style development pairs (24 contexts, 12 domains; full-sentence answers, paraphrases; one entity, number, negation, recombination or unsupported claim per hallucinated answer). Never trained on; looked at while choosing the evidence features."
	$(BIN)/lunaserve evaluate repository/context_adherence/2 --test $(DATA)/qa_test_length_neutral.csv --out build/evaluation/qa_test_length_neutral \
	  --record qa_test_length_neutral --description "HaluEval QA, the whole test split, length-neutralised (length alone scores ROC-AUC 0.5): version 1's headline set."

# Generalisation check of the shipped recipe: train on two HaluEval tasks (the combiner and the
# threshold fitted on their eval rows only), test on the third. Figures: build/loto/<task>/.
LOTO := build/loto
default-metric-loto: setup
	$(BIN)/lunaserve base fetch
	for held in qa dialogue summarization; do \
	  contexts=$$(echo $(TRAIN_CONTEXTS) | tr , '\n' | grep -v "^$$held=" | paste -sd, -); \
	  $(BIN)/lunaserve data halueval --out $(LOTO)/$$held/data --seed 0 --train-contexts $$contexts --counterfactual-pairs $(COUNTERFACTUAL_PAIRS) || exit 1; \
	  $(BIN)/lunaserve finetune --base build/downloads/minilm --train $(LOTO)/$$held/data/train.csv --eval $(LOTO)/$$held/data/eval.csv \
	    --out $(LOTO)/$$held/checkpoint --epochs $(EPOCHS) --lr 5e-5 --batch-size 16 --max-train-tokens 384 --seed 0 || exit 1; \
	  $(BIN)/lunaserve export $(LOTO)/$$held/checkpoint --eval $(LOTO)/$$held/data/eval.csv --repository $(LOTO)/$$held/repository --force \
	    --quantization $(QUANTIZATION) --evidence $(EVIDENCE) --threshold-from-eval || exit 1; \
	  $(BIN)/lunaserve evaluate $(LOTO)/$$held/repository/context_adherence/2 --test $(LOTO)/$$held/data/$${held}_test.csv \
	    --out $(LOTO)/$$held/evaluation || exit 1; \
	done

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy service
	$(BIN)/hadolint Dockerfile

test: setup lint
	$(BIN)/pytest

clean:
	rm -rf build $(VENV)
