"""Fine-tuning on a tiny random BERT and a WordLevel tokenizer built here: seconds, no download."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer  # noqa: E402
from tokenizers.models import WordLevel  # noqa: E402
from tokenizers.pre_tokenizers import Whitespace  # noqa: E402
from tokenizers.processors import TemplateProcessing  # noqa: E402

from models import finetune as finetune_module  # noqa: E402
from models.finetune import (  # noqa: E402
    EVALUATE_WHEN,
    FinetuneError,
    finetune,
    length_sorted_batches,
    training_spec,
)
from service.runtime.spec import LongInputMode, MetricSpec  # noqa: E402

WORDS = [f"w{i}" for i in range(40)]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


@pytest.fixture
def spec() -> MetricSpec:
    return MetricSpec.model_validate(
        {
            "name": "context_adherence",
            "version": "1",
            "description": "Is the output supported by the context?",
            "labels": ["hallucinated", "supported"],
            "positive_label": "supported",
            "required_fields": ["output", "context"],
            "text_pair": {"first": ["input", "output"], "second": ["context"]},
            "max_tokens": 64,
        }
    )


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    base = tmp_path / "base"
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.enable_truncation(16)  # like the real base: the trainer must switch this off
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    transformers.BertModel(config).save_pretrained(base)
    tokenizer.save(str(base / "tokenizer.json"))
    return base


def _row(query: str, answer: str, context: list[str], supported: bool) -> dict[str, str]:
    label = "supported" if supported else "hallucinated"
    return {"input": query, "output": answer, "context": " ".join(context), "label": label}


def _write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["input", "output", "context", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_rows(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        context = rng.sample(WORDS, 38 if i % 5 == 0 else 8)  # some are cut at 40 tokens
        supported = i % 2 == 0
        answer = rng.choice(context) if supported else rng.choice(sorted(set(WORDS) - set(context)))
        rows.append(_row("w0 w1", answer, context, supported))
    return _write_csv(path, rows)


def _run(base_dir: Path, tmp_path: Path, spec: MetricSpec, out: str, **overrides: object):
    train = _write_rows(tmp_path / "train.csv", 40, seed=1)
    evaluation = _write_rows(tmp_path / "eval.csv", 12, seed=2)
    options: dict[str, object] = {
        "epochs": 1,
        "learning_rate": 1e-3,
        "batch_size": 8,
        "max_train_tokens": 40,
        "seed": 7,
        "progress": False,
    }
    options.update(overrides)
    return finetune(base_dir, train, evaluation, spec, tmp_path / out, **options)  # type: ignore[arg-type]


def test_finetune_writes_a_checkpoint_that_loads_back(
    base_dir: Path, tmp_path: Path, spec: MetricSpec
) -> None:
    result = _run(base_dir, tmp_path, spec, "ckpt")
    out = result.out_dir
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True)
    assert model.config.id2label == {0: "hallucinated", 1: "supported"}
    assert model.config.label2id == {"hallucinated": 0, "supported": 1}
    assert model.config.architectures == ["BertForSequenceClassification"]
    saved = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved["truncation"] is None and saved["padding"] is None
    assert result.train_examples == 40 and result.skipped_examples == 0
    assert result.steps == 5


def test_finetune_writes_the_training_log(base_dir: Path, tmp_path: Path, spec: MetricSpec) -> None:
    result = _run(base_dir, tmp_path, spec, "ckpt", epochs=2)
    records = [json.loads(line) for line in result.log_path.read_text().splitlines()]
    events = [r["event"] for r in records]
    assert events[0] == "start" and events[-1] == "end"
    assert events.count("step") == 10 and events.count("epoch") == 2
    start = records[0]
    assert start["seed"] == 7 and {"torch", "transformers", "tokenizers"} <= set(start["versions"])
    epoch = next(r for r in records if r["event"] == "epoch")
    assert {"loss", "roc_auc", "f1", "train_s"} <= set(epoch)
    assert 0.0 <= epoch["roc_auc"] <= 1.0
    assert records[-1]["duration_s"] > 0
    assert len(result.epochs) == 2


def test_finetune_is_deterministic_for_a_seed(base_dir: Path, tmp_path: Path, spec: MetricSpec) -> None:
    first = _run(base_dir, tmp_path, spec, "a")
    second = _run(base_dir, tmp_path, spec, "b")
    assert (first.out_dir / "model.safetensors").read_bytes() == (
        second.out_dir / "model.safetensors"
    ).read_bytes()


def test_finetune_in_bf16_is_deterministic_logged_and_not_fp32(
    base_dir: Path, tmp_path: Path, spec: MetricSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bfloat16 autocast trains other weights than fp32 (the forward pass runs in bf16), the same
    ones for a seed, and says so in the log; the saved checkpoint stays fp32. (Taken as a CPU with
    native bf16: elsewhere autocast is emulated, slow but the same arithmetic, fine for a tiny model.)"""
    monkeypatch.setattr(finetune_module, "native_bf16", lambda: True)
    first = _run(base_dir, tmp_path, spec, "bf16-a", bf16=True)
    second = _run(base_dir, tmp_path, spec, "bf16-b", bf16=True)
    fp32 = _run(base_dir, tmp_path, spec, "fp32")
    weights = [(r.out_dir / "model.safetensors").read_bytes() for r in (first, second, fp32)]
    assert weights[0] == weights[1] and weights[0] != weights[2]
    start = json.loads(first.log_path.read_text().splitlines()[0])
    assert start["bf16"] is True and json.loads(fp32.log_path.read_text().splitlines()[0])["bf16"] is False
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        first.out_dir, local_files_only=True
    )
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_finetune_without_native_bf16_trains_fp32_and_says_so(
    base_dir: Path,
    tmp_path: Path,
    spec: MetricSpec,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On a CPU without bfloat16 units, --bf16 would be emulated (18x slower): fp32 runs instead,
    bit for bit the fp32 run, with the request and the outcome in the log."""
    monkeypatch.setattr(finetune_module, "native_bf16", lambda: False)
    asked = _run(base_dir, tmp_path, spec, "asked-bf16", bf16=True)
    fp32 = _run(base_dir, tmp_path, spec, "plain-fp32")
    assert (asked.out_dir / "model.safetensors").read_bytes() == (
        fp32.out_dir / "model.safetensors"
    ).read_bytes()
    start = json.loads(asked.log_path.read_text().splitlines()[0])
    assert start["bf16_requested"] is True and start["bf16"] is False
    assert "no native bfloat16" in capsys.readouterr().err


def test_finetune_without_attention_dropout_trains_other_weights_and_records_it(
    base_dir: Path, tmp_path: Path, spec: MetricSpec
) -> None:
    """--attention-dropout 0 is a different run from the base config's 0.1 (the mask is not
    drawn), deterministic for a seed, logged, and kept in the saved config."""
    first = _run(base_dir, tmp_path, spec, "no-drop-a", attention_dropout=0.0)
    second = _run(base_dir, tmp_path, spec, "no-drop-b", attention_dropout=0.0)
    default = _run(base_dir, tmp_path, spec, "default")
    weights = [(r.out_dir / "model.safetensors").read_bytes() for r in (first, second, default)]
    assert weights[0] == weights[1] and weights[0] != weights[2]
    starts = [json.loads(r.log_path.read_text().splitlines()[0]) for r in (first, default)]
    assert [start["attention_dropout"] for start in starts] == [0.0, 0.1]
    saved = json.loads((first.out_dir / "config.json").read_text(encoding="utf-8"))
    assert saved["attention_probs_dropout_prob"] == 0.0


def test_finetune_scores_the_eval_split_only_when_asked(
    base_dir: Path, tmp_path: Path, spec: MetricSpec
) -> None:
    """Every epoch is timed; only the asked ones are scored, and skipping a score changes no weight."""
    runs = {when: _run(base_dir, tmp_path, spec, when, epochs=3, evaluate=when) for when in EVALUATE_WHEN}
    for when, result in runs.items():
        epochs = [json.loads(line) for line in result.log_path.read_text().splitlines()]
        epochs = [r for r in epochs if r["event"] == "epoch"]
        assert [r["epoch"] for r in epochs] == [1.0, 2.0, 3.0] and all(r["train_s"] > 0 for r in epochs)
        scored = [r["epoch"] for r in epochs if "roc_auc" in r]
        assert scored == {"every-epoch": [1.0, 2.0, 3.0], "last-epoch": [3.0], "none": []}[when]
        assert [f["epoch"] for f in result.epochs] == scored
    weights = {(r.out_dir / "model.safetensors").read_bytes() for r in runs.values()}
    assert len(weights) == 1


def test_finetune_will_not_guard_a_run_it_does_not_evaluate(
    base_dir: Path, tmp_path: Path, spec: MetricSpec
) -> None:
    with pytest.raises(FinetuneError, match="needs an evaluation"):
        _run(base_dir, tmp_path, spec, "out", evaluate="none", revert_if_auc_drops=0.05)
    with pytest.raises(FinetuneError, match="not one of every-epoch, last-epoch, none"):
        _run(base_dir, tmp_path, spec, "out", evaluate="sometimes")


def test_finetune_skips_items_whose_kept_fields_do_not_fit(
    base_dir: Path, tmp_path: Path, spec: MetricSpec
) -> None:
    train = tmp_path / "train.csv"
    _write_rows(train, 40, seed=1)
    with train.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[0]["input"] = " ".join(WORDS * 2)  # 80 tokens of query: no room under 40
    with train.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    evaluation = _write_rows(tmp_path / "eval.csv", 12, seed=2)
    result = finetune(
        base_dir,
        train,
        evaluation,
        spec,
        tmp_path / "ckpt",
        epochs=1,
        learning_rate=1e-3,
        batch_size=8,
        max_train_tokens=40,
        seed=0,
        progress=False,
    )
    assert result.skipped_examples == 1 and result.train_examples == 39


def test_finetune_rejects_unknown_labels(base_dir: Path, tmp_path: Path, spec: MetricSpec) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("input,output,context,label\nq,a,c,maybe\n", encoding="utf-8")
    with pytest.raises(FinetuneError, match=r"bad\.csv:2:label: error: label 'maybe' is not one of"):
        finetune(
            base_dir,
            bad,
            bad,
            spec,
            tmp_path / "ckpt",
            epochs=1,
            learning_rate=1e-3,
            batch_size=8,
            max_train_tokens=40,
            seed=0,
            progress=False,
        )


def test_training_spec_shortens_and_truncates(spec: MetricSpec) -> None:
    short = training_spec(spec, 32)
    assert short.max_tokens == 32
    assert short.long_input.mode is LongInputMode.TRUNCATE_TAIL
    assert spec.max_tokens == 64 and spec.long_input.mode is LongInputMode.WINDOW


def test_length_sorted_batches_cover_every_index_once() -> None:
    lengths = [random.Random(i).randint(5, 50) for i in range(103)]
    batches = length_sorted_batches(lengths, 8, random.Random(0), pool_batches=4)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(103))
    assert all(len(b) <= 8 for b in batches)


def test_finetune_restores_the_deterministic_setting(
    base_dir: Path, tmp_path: Path, spec: MetricSpec
) -> None:
    assert not torch.are_deterministic_algorithms_enabled()
    _run(base_dir, tmp_path, spec, "ckpt")
    assert not torch.are_deterministic_algorithms_enabled()


def _easy_rows(path: Path, n: int, seed: int) -> Path:
    """Rows the tiny model learns in a few epochs: the answer word alone gives the label."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        supported = i % 2 == 0
        rows.append(_row("w0", "w1" if supported else "w2", rng.sample(WORDS, 8), supported))
    return _write_csv(path, rows)


def _easy_run(base: Path, tmp_path: Path, spec: MetricSpec, out: str, **options: object):
    train, evaluation = (
        _easy_rows(tmp_path / "easy_train.csv", 40, 1),
        _easy_rows(tmp_path / "easy_eval.csv", 12, 2),
    )
    settings: dict[str, object] = {"batch_size": 8, "max_train_tokens": 40, "seed": 7, "progress": False}
    return finetune(base, train, evaluation, spec, tmp_path / out, **{**settings, **options})  # type: ignore[arg-type]


def test_finetune_reverts_to_its_start_when_the_eval_auc_collapses(
    base_dir: Path, tmp_path: Path, spec: MetricSpec
) -> None:
    """A stage that wrecks what the previous one learned (a learning rate of 1 drives the tiny
    model to a constant output, eval loss ln 2, as stage 3 did in fp32) saves the previous
    weights instead, and says so."""
    learned = _easy_run(base_dir, tmp_path, spec, "learned", epochs=6, learning_rate=3e-3)
    start_auc = learned.epochs[-1]["roc_auc"]
    assert start_auc > 0.9  # the start is worth keeping
    wrecked = _easy_run(
        learned.out_dir, tmp_path, spec, "wrecked", epochs=1, learning_rate=1.0, revert_if_auc_drops=0.05
    )
    records = [json.loads(line) for line in wrecked.log_path.read_text().splitlines()]
    start = next(r for r in records if r["event"] == "start_eval")
    assert start["roc_auc"] == pytest.approx(start_auc)
    assert wrecked.epochs[-1]["roc_auc"] == pytest.approx(0.5)  # what the run itself ended at
    reverted = next(r for r in records if r["event"] == "reverted")
    assert reverted["to_epoch"] == 0.0 and reverted["roc_auc"] == pytest.approx(start_auc)
    # the saved weights are the start's: scored again without learning, they rank as the start did
    again = _easy_run(wrecked.out_dir, tmp_path, spec, "again", epochs=1, learning_rate=0.0)
    assert again.epochs[-1]["roc_auc"] == pytest.approx(start_auc)


def test_finetune_keeps_its_end_when_the_eval_auc_holds(
    base_dir: Path, tmp_path: Path, spec: MetricSpec
) -> None:
    result = _easy_run(
        base_dir, tmp_path, spec, "out", epochs=6, learning_rate=3e-3, revert_if_auc_drops=0.05
    )
    events = [json.loads(line)["event"] for line in result.log_path.read_text().splitlines()]
    assert "start_eval" in events and "reverted" not in events
    assert result.epochs[-1]["roc_auc"] > 0.9
    check = _easy_run(result.out_dir, tmp_path, spec, "check", epochs=1, learning_rate=0.0)
    assert check.epochs[-1]["roc_auc"] == pytest.approx(result.epochs[-1]["roc_auc"])
