"""Where an artifact came from: the fine-tuning log and the provenance a person states.

Both go into the manifest's `source` and from there into the model card, so the card's
training section is never written by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

TRAINING_LOG = "training_log.jsonl"
TRAINING_KEYS = ("seed", "epochs", "learning_rate", "batch_size", "max_train_tokens", "train_examples",
                 "skipped_examples", "train_csv", "eval_csv")  # fmt: skip


def training_record(checkpoint: Path) -> dict[str, Any]:
    """What `lunaserve finetune` logged about this checkpoint: settings, seed, duration, eval."""
    path = checkpoint / TRAINING_LOG
    if not path.is_file():
        return {}
    record: dict[str, Any] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        kind = event.get("event")
        if kind == "start":
            record.update({k: event[k] for k in TRAINING_KEYS if k in event})
        elif kind == "epoch" and "roc_auc" in event:
            record["last_epoch_eval"] = {k: event[k] for k in ("roc_auc", "f1", "loss") if k in event}
        elif kind == "end":
            record["training_seconds"] = event.get("duration_s")
    if record.get("train_csv") and (share := synthetic_share(Path(record["train_csv"]))):
        record["synthetic_rows"] = share
    return record


def synthetic_share(train_csv: Path) -> str | None:
    """The training CSV's synthetic rows and who wrote them, as the card states it (None: none)."""
    import csv
    from collections import Counter

    if not train_csv.is_file():
        return None
    with open(train_csv, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if "source" not in (reader.fieldnames or []):
            return None
        rows = 0
        generators: Counter[str] = Counter()
        for row in reader:
            rows += 1
            if (row.get("source") or "").startswith("synthetic"):
                generators[(row.get("generator") or "").strip() or "generator not stated"] += 1
    if not generators:
        return None
    synthetic = sum(generators.values())
    by = "; ".join(f"{n} by {g}" for g, n in generators.most_common())
    return f"{synthetic} of {rows} training rows ({synthetic / rows:.0%}) are synthetic: {by}"


def load_card_notes(path: Path | None) -> dict[str, Any]:
    """Provenance a person states (data, licence, synthetic share, limits) for the card."""
    if path is None:
        return {}
    try:
        notes = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read card notes: {exc}") from None
    if not isinstance(notes, dict) or not set(notes) <= {"base_model", "base_sha256", "training"}:
        raise ValueError(f"{path}: card notes are a mapping of base_model, base_sha256 and training")
    return notes


def source_info(checkpoint: Path, notes: dict[str, Any]) -> dict[str, Any]:
    training = {**training_record(checkpoint), **(notes.get("training") or {})}
    return {
        "checkpoint": str(checkpoint),
        "base_model": notes.get("base_model", ""),
        "base_sha256": notes.get("base_sha256", ""),
        "training": training,
    }
