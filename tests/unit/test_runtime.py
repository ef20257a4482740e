"""service.runtime: spec, encoding and long inputs, postprocessing, artifacts, offline scoring."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from service.loaded_metric import fewest_tokens
from service.runtime.artifact import ArtifactError, load_artifact
from service.runtime.classifier import MetricModel, plan_batches
from service.runtime.encoding import EncodedItem, ItemTooLongError, PairEncoder, collate, window_starts
from service.runtime.postprocess import aggregate_windows, decide, probabilities
from service.runtime.spec import InputField, MetricSpec, SpecError, WindowAggregation, load_spec
from tests.tiny_models import build_word_tokenizer, expected_score, write_counting_artifact

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = ROOT / "specs" / "context_adherence.yaml"


def small_spec(**long_input: object) -> MetricSpec:
    spec = load_spec(DEFAULT_SPEC)
    raw = spec.model_dump()
    raw["long_input"].update(long_input)
    return MetricSpec.model_validate({**raw, "max_tokens": 48})


def words(n: int, word: str = "x") -> str:
    return " ".join([word] * n)


def test_spec_default_loads() -> None:
    spec = load_spec(DEFAULT_SPEC)
    assert spec.name == "context_adherence"
    assert spec.labels[spec.positive_index] == "supported"


def test_spec_invalid_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT_SPEC.read_text().replace("positive_label: supported", "positive_label: yes"))
    with pytest.raises(SpecError, match=r"bad\.yaml.*positive_label"):
        load_spec(bad)
    bad.write_text("threshold: [1, 2]\n")
    with pytest.raises(SpecError, match="threshold"):
        load_spec(bad)
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(bad)


def test_encoder_pair_layout_and_type_ids() -> None:
    encoder = PairEncoder(build_word_tokenizer(), small_spec())
    item = encoder.encode({"input": "who", "output": "paris", "context": "the capital of france"})
    (window,) = item.windows
    tok = encoder.tokenizer
    assert encoder.spec.text_pair.first == [InputField.OUTPUT, InputField.INPUT]  # the response leads
    assert tok.decode(window.input_ids.tolist(), skip_special_tokens=False).split() == [
        "[CLS]",
        "paris",
        "who",
        "[SEP]",
        "the",
        "capital",
        "of",
        "france",
        "[SEP]",
    ]
    assert window.token_type_ids.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert item.truncated_tokens == 0
    assert item.tokens == 9


def test_encoder_window_policy_covers_long_context_keeping_the_response() -> None:
    spec = small_spec(mode="window", window_overlap_tokens=8, max_windows=8)
    encoder = PairEncoder(build_word_tokenizer(), spec)
    context = " ".join(f"{w}" for w in ["paris"] * 30 + ["berlin"] * 30)
    item = encoder.encode({"output": "good zzz", "context": context})
    budget = 48 - 3 - 2
    assert len(item.windows) == 2 and item.truncated_tokens == 0
    for w in item.windows:
        assert len(w) == 48
        assert w.input_ids[1:3].tolist() == [encoder.tokenizer.token_to_id("good"), 1]  # kept; zzz is [UNK]
    starts, covered = window_starts(60, budget, 8, 8)
    assert starts == [0, 60 - budget] and covered == 60


def test_encoder_window_limit_counts_cut_tokens() -> None:
    encoder = PairEncoder(build_word_tokenizer(), small_spec(window_overlap_tokens=0, max_windows=2))
    item = encoder.encode({"output": "good", "context": words(200)})
    budget = 48 - 3 - 1
    assert len(item.windows) == 2
    assert item.truncated_tokens == 200 - 2 * budget


@pytest.mark.parametrize(("mode", "kept_word"), [("truncate_tail", "paris"), ("truncate_head", "berlin")])
def test_encoder_truncation_keeps_the_right_end(mode: str, kept_word: str) -> None:
    encoder = PairEncoder(build_word_tokenizer(), small_spec(mode=mode))
    item = encoder.encode({"output": "good", "context": words(50, "paris") + " " + words(50, "berlin")})
    (window,) = item.windows
    assert len(window) == 48 and item.truncated_tokens == 100 - 44
    assert encoder.tokenizer.id_to_token(int(window.input_ids[4])) == kept_word
    assert encoder.tokenizer.id_to_token(int(window.input_ids[-2])) == kept_word


def test_encoder_reject_policy_and_overlong_response_raise() -> None:
    encoder = PairEncoder(build_word_tokenizer(), small_spec(mode="reject"))
    with pytest.raises(ItemTooLongError, match="policy is reject"):
        encoder.encode({"output": "good", "context": words(100)})
    window = PairEncoder(build_word_tokenizer(), small_spec())
    with pytest.raises(ItemTooLongError, match="shorten them"):
        window.encode({"output": words(40), "context": words(10)})
    results = window.try_encode_many(
        [{"output": words(40), "context": words(10)}, {"output": words(40), "context": "x"}]
    )
    assert isinstance(results[0], ItemTooLongError) and not isinstance(results[1], Exception)


@pytest.mark.parametrize("length", [45, 46, 100, 257, 1000])
def test_window_starts_cover_everything_within_limits(length: int) -> None:
    width, overlap = 44, 10
    starts, covered = window_starts(length, width, overlap, max_windows=64)
    assert starts[0] == 0 and starts[-1] + width == length == covered
    assert all(b - a <= width - overlap for a, b in itertools.pairwise(starts))


def test_collate_pads_and_masks() -> None:
    encoder = PairEncoder(build_word_tokenizer(), small_spec())
    a, b = encoder.encode_many([{"output": "good", "context": "x"}, {"output": "good", "context": "x x x"}])
    batch = collate([a.windows[0], b.windows[0]], encoder.pad_id)
    assert batch["input_ids"].shape == (2, 7)
    assert batch["attention_mask"].tolist() == [[1] * 5 + [0, 0], [1] * 7]
    assert batch["input_ids"][0, 5:].tolist() == [encoder.pad_id] * 2


def test_postprocess_softmax_sigmoid_and_decision() -> None:
    probs = probabilities(np.array([[0.0, 0.0], [0.0, 100.0]]), "softmax")
    assert probs[0].tolist() == [0.5, 0.5] and probs[1, 1] == pytest.approx(1.0)
    assert probabilities(np.array([[0.0]]), "sigmoid")[0, 0] == 0.5
    spec = small_spec()
    failed = decide(np.array([0.8, 0.2]), spec, windows=1, truncated_tokens=0)
    assert (failed.label, failed.passed) == ("hallucinated", False)
    assert decide(np.array([0.5, 0.5]), spec, windows=2, truncated_tokens=3).passed  # >= threshold


def test_aggregate_windows_picks_deciding_window() -> None:
    rows = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert aggregate_windows(rows, 1, WindowAggregation.MAX).tolist() == [0.2, 0.8]
    assert aggregate_windows(rows, 1, WindowAggregation.MIN).tolist() == [0.9, 0.1]
    assert aggregate_windows(rows, 1, WindowAggregation.MEAN)[1] == pytest.approx(1.3 / 3)


def test_plan_batches_respects_budget_and_groups_lengths() -> None:
    lengths = [5, 100, 7, 90, 6, 95, 50]
    batches = plan_batches(lengths, max_batch_tokens=200, max_batch_rows=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3 and len(batch) * max(lengths[i] for i in batch) <= 200
    assert batches[0] == [0, 4, 2]


def test_metric_model_scores_trace_back_to_items(tmp_path: Path) -> None:
    spec = small_spec(window_overlap_tokens=4, max_windows=8)
    folder = write_counting_artifact(tmp_path / "repo", spec, tmp_path)
    model = MetricModel.load(folder, intra_op_threads=1)
    items = [
        {"output": "good good", "context": "paris"},
        {"output": "bad", "context": "the capital bad"},
        # "good" only near the end of a long context: the max over windows finds it
        {"output": "x", "context": words(100) + " good good good"},
        {"output": words(60), "context": "x"},
    ]
    results = model.score(items, max_batch_tokens=96)
    assert results[0].score == pytest.approx(expected_score(2, 0))
    assert results[1].score == pytest.approx(expected_score(0, 2)) and not results[1].passed
    assert results[2].windows > 1 and results[2].score == pytest.approx(expected_score(3, 0))
    assert isinstance(results[3], ItemTooLongError)


def test_artifact_verification_refuses_tampering(tmp_path: Path) -> None:
    spec = small_spec()
    folder = write_counting_artifact(tmp_path / "repo", spec, tmp_path)
    assert load_artifact(folder).spec == spec
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(ArtifactError, match=r"tokenizer\.json: sha256 .* does not match"):
        load_artifact(folder)


def test_artifact_verification_refuses_bad_layout_and_manifest(tmp_path: Path) -> None:
    spec = small_spec()
    folder = write_counting_artifact(tmp_path / "repo", spec, tmp_path)
    moved = folder.parent / f"{spec.version}-moved"
    folder.rename(moved)
    with pytest.raises(ArtifactError, match=f"expected context_adherence/{spec.version}"):
        load_artifact(moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    del manifest["files"]["model.onnx"]
    (moved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="no digest"):
        load_artifact(moved, check_layout=False)
    (moved / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable manifest"):
        load_artifact(moved, check_layout=False)
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        load_artifact(tmp_path)


def test_fewest_tokens_never_exceeds_what_the_items_queue(tmp_path: Path) -> None:
    """Admission refuses on it before tokenising (service.loaded_metric.fewest_tokens)."""
    spec = small_spec(window_overlap_tokens=4, max_windows=8)
    model = MetricModel.load(write_counting_artifact(tmp_path / "repo", spec, tmp_path), intra_op_threads=1)
    items = [
        {"output": "good good", "context": "paris"},
        {"output": "it's 3.5km, isn't it?", "context": "the capital, 12,000 km away"},
        {"output": "x", "context": words(100) + " good"},  # read in several windows
        {"output": "  ", "context": "\n\t"},
    ]
    for item in items:
        (encoded,) = model.encode([item])
        assert isinstance(encoded, EncodedItem)
        assert fewest_tokens([item], spec.max_tokens) <= sum(len(w) for w in encoded.windows)
    assert fewest_tokens(items[:1], spec.max_tokens) == 3
