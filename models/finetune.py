"""Fine-tune a BERT-style encoder as a pair classifier (cross-encoder) on a customer CSV.

Texts go through `service.runtime.encoding.PairEncoder`, the encoder the server uses, so training
and serving see the same token pairs (first segment = input and output joined by a newline,
second = context). Training uses a copy of the metric's spec with `max_tokens` lowered to
`max_train_tokens` and the context truncated at its tail (one window per example: a window of a
long context without the evidence would carry a wrong "supported" label); evaluation during
training uses the metric's own spec (its max tokens and long-input policy), as served.

Why a plain torch loop and not `transformers.Trainer`: the batches must come from our encoder's
windows (no HF tokenizer or datasets in between), batches are cut from length-sorted examples to
avoid padding (2 CPU cores: padding is most of the cost), and evaluation has to aggregate windows
per item as the server does. Those three would each mean overriding a Trainer hook; the loop
below is ~60 lines, seeded and deterministic on CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import random
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.data_check import DataFileError, read_labelled_csv
from models.figures import positive_f1, roc_auc
from service.runtime.classifier import aggregate_item, plan_batches
from service.runtime.encoding import (
    EncodedItem,
    ItemTooLongError,
    PairEncoder,
    Window,
    collate,
)
from service.runtime.postprocess import probabilities
from service.runtime.spec import LongInputMode, MetricSpec
from service.runtime.tokenizer import load_tokenizer

EVALUATE_WHEN = ("every-epoch", "last-epoch", "none")
TOKENIZER_SIDE_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


class FinetuneError(ValueError):
    """Bad training input: unknown labels, an empty set, a missing base file."""


@dataclass(frozen=True)
class FinetuneResult:
    out_dir: Path
    log_path: Path
    train_examples: int
    skipped_examples: int  # items whose kept fields alone exceed max_train_tokens
    steps: int
    duration_s: float
    epochs: list[dict[str, float]] = field(default_factory=list)  # eval figures of each evaluated epoch


def read_items(path: Path, spec: MetricSpec) -> tuple[list[dict[str, str]], list[int]]:
    """Rows of a customer CSV (checked by the dataset rules) and their label ids in `spec.labels` order."""
    try:
        rows = read_labelled_csv(Path(path), spec)
    except DataFileError as exc:
        raise FinetuneError(str(exc)) from None
    if not rows:
        raise FinetuneError(f"{path}: no rows")
    return rows, [spec.labels.index(row["label"]) for row in rows]


def training_spec(spec: MetricSpec, max_train_tokens: int) -> MetricSpec:
    """The metric's spec for training: a shorter window, the context cut at its tail, whole responses.

    Claims are not split for training: a hallucinated response's label belongs to the response,
    and most of its sentences may be faithful. The model learns on whole responses and is served
    claim by claim when the spec says so; evaluation during training scores as served.
    """
    policy = spec.long_input.model_copy(update={"mode": LongInputMode.TRUNCATE_TAIL})
    return spec.model_copy(update={"max_tokens": max_train_tokens, "long_input": policy, "claims": None})


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, *, pool_batches: int = 50
) -> list[list[int]]:
    """Shuffled batches of similar length: sort within random pools of `pool_batches` batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * pool_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _tensors(windows: Sequence[Window], pad_id: int) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(v) for k, v in collate(windows, pad_id).items()}


def score_items(
    model: Any,
    encoder: PairEncoder,
    items: Sequence[Mapping[str, str]],
    *,
    max_batch_tokens: int = 8192,
    max_batch_rows: int = 32,
) -> tuple[np.ndarray, list[EncodedItem | ItemTooLongError]]:
    """Label probabilities per item (windows aggregated as the spec says) with a torch model.

    Items that cannot be encoded get a row of NaN. Returns the rows and the encodings.
    """
    import torch

    spec = encoder.spec
    encoded = encoder.try_encode_many(items)
    owners: list[int] = []
    windows: list[Window] = []
    for index, item in enumerate(encoded):
        if isinstance(item, EncodedItem):
            owners += [index] * len(item.windows)
            windows += item.windows
    window_probs = np.zeros((len(windows), len(spec.labels)))
    model.eval()
    with torch.inference_mode():
        for batch in plan_batches([len(w) for w in windows], max_batch_tokens, max_batch_rows):
            logits = model(**_tensors([windows[i] for i in batch], encoder.pad_id)).logits
            window_probs[batch] = probabilities(logits.float().numpy(), spec.activation)
    out = np.full((len(items), len(spec.labels)), np.nan)
    rows_of: dict[int, list[int]] = {}
    for row, owner in enumerate(owners):
        rows_of.setdefault(owner, []).append(row)
    for index, rows in rows_of.items():
        item = encoded[index]
        assert isinstance(item, EncodedItem)
        out[index] = aggregate_item(item, window_probs[rows], spec)
    return out, encoded


def evaluate_probs(probs: np.ndarray, labels: Sequence[int], spec: MetricSpec) -> dict[str, float]:
    """Loss, ROC-AUC and F1 (positive label, at the spec's threshold) of item probabilities."""
    y = np.asarray(labels)
    ok = ~np.isnan(probs).any(axis=1)
    p, y = np.clip(probs[ok], 1e-12, 1.0), y[ok]
    pos = spec.positive_index
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y])))
    truth, guess = y == pos, p[:, pos] >= spec.threshold
    f1 = positive_f1(truth, guess)
    auc = roc_auc(truth, p[:, pos]) if 0 < truth.sum() < len(truth) else float("nan")
    return {"loss": loss, "roc_auc": auc, "f1": f1, "items": float(len(y))}


def _versions() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
    }


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), as oneDNN sees it.

    Without it, bf16 autocast is emulated: a 16 x 256-token MiniLM step took 55 s against 3.0 s
    in fp32 on an AVX2-only EPYC here, so asking for bf16 there must not be taken literally.
    """
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def _progress(iterable: Sequence[Any], enabled: bool, desc: str) -> Iterator[Any]:
    if not enabled:
        yield from iterable
        return
    from tqdm import tqdm

    yield from tqdm(iterable, desc=desc, unit="batch", leave=False)


def classifier_from_base(
    base_dir: Path, labels: Sequence[str], attention_dropout: float | None = None
) -> Any:
    """The base encoder with a fresh head of the spec's labels (id2label in its config)."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        base_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        local_files_only=True,
        **({} if attention_dropout is None else {"attention_probs_dropout_prob": attention_dropout}),
    )


def save_checkpoint(model: Any, base_dir: Path, out_dir: Path) -> None:
    """HF checkpoint: config (with id2label), safetensors, tokenizer.json without pad/truncation."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    load_tokenizer(base_dir / "tokenizer.json").save(str(out_dir / "tokenizer.json"))
    for name in TOKENIZER_SIDE_FILES:  # what AutoTokenizer / optimum look for beside it
        if (base_dir / name).is_file():
            shutil.copyfile(base_dir / name, out_dir / name)


@contextlib.contextmanager
def _deterministic_run() -> Iterator[None]:
    """Deterministic kernels for this run only, not for the caller's later work."""
    import torch

    previous = torch.are_deterministic_algorithms_enabled()
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _auc(figures: dict[str, float]) -> float:
    auc = figures.get("roc_auc", float("nan"))
    return float("-inf") if math.isnan(auc) else auc


@dataclass
class _BestPoint:
    """The weights (a copy) at the best eval ROC-AUC seen so far, and when."""

    epoch: float
    roc_auc: float
    state: dict[str, Any]

    @classmethod
    def of(cls, model: Any, figures: dict[str, float]) -> _BestPoint:
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return cls(figures["epoch"], _auc(figures), state)


def finetune(
    base_dir: Path,
    train_csv: Path,
    eval_csv: Path,
    spec: MetricSpec,
    out_dir: Path,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    max_train_tokens: int,
    seed: int,
    progress: bool = True,
    warmup_fraction: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    bf16: bool = False,
    revert_if_auc_drops: float | None = None,
    attention_dropout: float | None = None,
    evaluate: str = "every-epoch",
) -> FinetuneResult:
    """Fine-tune `base_dir` on `train_csv`, score `eval_csv` as `evaluate` says, save to `out_dir`.

    AdamW with linear warmup over `warmup_fraction` of the steps and linear decay to zero;
    no weight decay on biases and LayerNorm. The classification head is initialised from
    `seed`. Writes the checkpoint and `training_log.jsonl` (one JSON object per line: a `start`
    record with the settings, seed and versions, a `step` record per optimiser step, an `epoch`
    record with eval loss / ROC-AUC / F1, and an `end` record with the duration).

    With `bf16`, the training forward pass runs under bfloat16 autocast (a 16 x 384-token step
    took 3.28 s against 4.30 s in fp32 on this project's AMX-BF16 CPUs); weights, optimiser and
    the per-epoch evaluation stay fp32. On a CPU without native bfloat16 (`native_bf16`) it trains
    in fp32 instead, says so on stderr, and the log records both what was asked and what ran.

    With `revert_if_auc_drops` (a ROC-AUC margin), the eval split is also scored before the first
    step, and if the run ends more than that margin below the best point seen (the start or an
    epoch), that point's weights are saved instead, with a `reverted` record and a warning. A
    stage whose loss slides to ln 2 (a constant output: seen in fp32, docs/quality.md) then
    costs its time but not the earlier stages' learning.

    `attention_dropout` replaces the base config's dropout on attention probabilities (BERT's
    0.1). At 0, PyTorch's fused attention kernel runs instead of the unfused one that draws a
    Bernoulli mask over every head's T x T probabilities: a 16 x 288-token fp32 step took 2.86 s
    against 4.04 s on an AVX2-only EPYC (the mask alone was a fifth of the step). The saved
    config keeps the value trained with.

    `evaluate` says when the eval split is scored: "every-epoch", "last-epoch" or "none" (the
    epoch records then carry the training time alone). One pass over version 2's eval split is
    ~110 s here: a stage whose figures the next stage's start records anyway can skip it.
    """
    if evaluate not in EVALUATE_WHEN:
        raise FinetuneError(f"evaluate: {evaluate!r} is not one of {', '.join(EVALUATE_WHEN)}")
    if revert_if_auc_drops is not None and evaluate == "none":
        raise FinetuneError("reverting on a fall of eval ROC-AUC needs an evaluation: evaluate last-epoch")
    with _deterministic_run():
        import torch

        base_dir, out_dir = Path(base_dir), Path(out_dir)
        if not (base_dir / "tokenizer.json").is_file():
            raise FinetuneError(f"{base_dir}: no tokenizer.json")
        started = time.perf_counter()
        bf16_requested = bf16
        if bf16 and not native_bf16():
            bf16 = False
            print(
                "finetune: this CPU has no native bfloat16 (AVX512-BF16 or AMX); emulated bf16 autocast"
                " is about 18x slower than fp32 here, so this run trains in fp32",
                file=sys.stderr,
            )
        _seed_everything(seed)
        tokenizer = load_tokenizer(base_dir / "tokenizer.json")
        train_encoder = PairEncoder(tokenizer, training_spec(spec, max_train_tokens))
        eval_encoder = PairEncoder(tokenizer, spec)

        train_rows, train_labels = read_items(train_csv, spec)
        eval_rows, eval_labels = read_items(eval_csv, spec)
        windows: list[Window] = []
        targets: list[int] = []
        skipped = 0
        for item, label in zip(train_encoder.try_encode_many(train_rows), train_labels, strict=True):
            if isinstance(item, ItemTooLongError):
                skipped += 1
                continue
            windows.append(item.windows[0])
            targets.append(label)
        if not windows:
            raise FinetuneError(f"{train_csv}: no row fits in {max_train_tokens} tokens")

        model = classifier_from_base(base_dir, spec.labels, attention_dropout)
        no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
        params = [
            {
                "params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
                "weight_decay": weight_decay,
            },
            {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(params, lr=learning_rate)
        steps_per_epoch = math.ceil(len(windows) / batch_size)
        total_steps = steps_per_epoch * epochs
        warmup = max(1, int(total_steps * warmup_fraction))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: (
                (s + 1) / warmup if s < warmup else max(0.0, (total_steps - s) / (total_steps - warmup))
            ),
        )
        rng = random.Random(seed)
        lengths = [len(w) for w in windows]
        target_tensor = torch.tensor(targets)

        out_dir.mkdir(parents=True, exist_ok=True)
        log_path = out_dir / "training_log.jsonl"
        epoch_figures: list[dict[str, float]] = []
        step = 0
        with log_path.open("w", encoding="utf-8") as log:

            def write(record: dict[str, Any]) -> None:
                log.write(json.dumps(record) + "\n")
                log.flush()

            write(
                {
                    "event": "start",
                    "seed": seed,
                    "base_dir": str(base_dir),
                    "train_csv": str(train_csv),
                    "eval_csv": str(eval_csv),
                    "train_examples": len(windows),
                    "skipped_examples": skipped,
                    "epochs": epochs,
                    "learning_rate": learning_rate,
                    "batch_size": batch_size,
                    "max_train_tokens": max_train_tokens,
                    "bf16": bf16,
                    "bf16_requested": bf16_requested,
                    "warmup_steps": warmup,
                    "total_steps": total_steps,
                    "weight_decay": weight_decay,
                    "max_grad_norm": max_grad_norm,
                    "attention_dropout": model.config.attention_probs_dropout_prob,
                    "attention": model.config._attn_implementation,
                    "torch_threads": torch.get_num_threads(),
                    "versions": _versions(),
                }
            )
            best: _BestPoint | None = None
            if revert_if_auc_drops is not None:
                probs, _ = score_items(model, eval_encoder, eval_rows)
                figures = {**evaluate_probs(probs, eval_labels, spec), "epoch": 0.0}
                write({"event": "start_eval", **figures})
                best = _BestPoint.of(model, figures)
            for epoch in range(1, epochs + 1):
                epoch_started = time.perf_counter()
                model.train()
                batches = length_sorted_batches(lengths, batch_size, rng)
                for batch in _progress(batches, progress, f"epoch {epoch}/{epochs}"):
                    inputs = _tensors([windows[i] for i in batch], train_encoder.pad_id)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        loss = model(**inputs, labels=target_tensor[batch]).loss
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                    optimizer.step()
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    write(
                        {
                            "event": "step",
                            "epoch": epoch,
                            "step": step,
                            "loss": round(loss.item(), 6),
                            "lr": schedule.get_last_lr()[0],
                            "tokens": int(inputs["attention_mask"].sum()),
                        }
                    )
                train_s = time.perf_counter() - epoch_started
                timing = {
                    "epoch": float(epoch),
                    "train_s": round(train_s, 2),
                    "examples_per_s": round(len(windows) / train_s, 2),
                }
                if evaluate == "none" or (evaluate == "last-epoch" and epoch < epochs):
                    write({"event": "epoch", **timing})
                    continue
                probs, _ = score_items(model, eval_encoder, eval_rows)
                figures = {**evaluate_probs(probs, eval_labels, spec), **timing}
                epoch_figures.append(figures)
                write({"event": "epoch", **figures})
                if best is not None and epoch < epochs and _auc(figures) > best.roc_auc:
                    best = _BestPoint.of(model, figures)
            if best is not None and revert_if_auc_drops is not None:
                final = _auc(epoch_figures[-1]) if epoch_figures else best.roc_auc
                if best.roc_auc - final > revert_if_auc_drops:
                    model.load_state_dict(best.state)
                    write({"event": "reverted", "to_epoch": best.epoch, "roc_auc": best.roc_auc,
                           "final_roc_auc": final, "margin": revert_if_auc_drops})  # fmt: skip
                    print(
                        f"finetune: eval ROC-AUC fell from {best.roc_auc:.3f} (epoch {best.epoch:g}) to"
                        f" {final:.3f}; saving the epoch-{best.epoch:g} weights instead",
                        file=sys.stderr,
                    )
            duration = time.perf_counter() - started
            write({"event": "end", "steps": step, "duration_s": round(duration, 2)})

        save_checkpoint(model, base_dir, out_dir)
        return FinetuneResult(
            out_dir=out_dir,
            log_path=log_path,
            train_examples=len(windows),
            skipped_examples=skipped,
            steps=step,
            duration_s=duration,
            epochs=epoch_figures,
        )
