"""models.provenance: the fine-tuning log and stated provenance become the manifest's source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.provenance import load_card_notes, source_info, training_record


def test_training_record_reads_settings_eval_and_duration(tmp_path: Path) -> None:
    events = [
        {"event": "start", "seed": 7, "epochs": 2, "learning_rate": 5e-5, "train_examples": 10, "noise": 1},
        {"event": "step", "loss": 0.6},
        {"event": "epoch", "roc_auc": 0.8, "f1": 0.7, "loss": 0.5, "epoch": 1},
        {"event": "epoch", "roc_auc": 0.9, "f1": 0.8, "loss": 0.4, "epoch": 2},
        {"event": "end", "duration_s": 12.5},
    ]
    (tmp_path / "training_log.jsonl").write_text("\n".join(json.dumps(e) for e in events))
    record = training_record(tmp_path)
    assert record == {
        "seed": 7, "epochs": 2, "learning_rate": 5e-5, "train_examples": 10,
        "last_epoch_eval": {"roc_auc": 0.9, "f1": 0.8, "loss": 0.4}, "training_seconds": 12.5,
    }  # fmt: skip
    assert training_record(tmp_path / "none") == {}


def test_card_notes_merge_over_the_log_and_bad_files_are_named(tmp_path: Path) -> None:
    notes = tmp_path / "notes.yaml"
    notes.write_text("base_model: tiny\ntraining:\n  data: toy rows\n  limits: [English only]\n")
    source = source_info(tmp_path, load_card_notes(notes))
    assert source["base_model"] == "tiny" and source["training"]["limits"] == ["English only"]
    notes.write_text("unexpected: 1\n")
    with pytest.raises(ValueError, match=r"notes\.yaml: card notes are a mapping"):
        load_card_notes(notes)
    notes.write_text("a: [\n")
    with pytest.raises(ValueError, match="cannot read card notes"):
        load_card_notes(notes)
