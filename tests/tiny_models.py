"""Tiny models and tokenizers built in milliseconds, so no test downloads anything.

The counting classifier's logits encode its input: logit(supported) - logit(hallucinated)
equals (count of "good" tokens - count of "bad" tokens) over the real (unmasked) tokens, so
every score in a test can be traced back to the item that produced it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from models.repository import publish_entry
from service.runtime.evidence import EvidenceCombiner
from service.runtime.spec import MetricSpec

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
WORDS = [
    "good",
    "bad",
    "the",
    "a",
    "is",
    "was",
    "in",
    "of",
    "and",
    "paris",
    "capital",
    "france",
    "berlin",
    "germany",
    "who",
    "what",
    "answer",
    "question",
    "context",
    "city",
    "river",
    "x",
]


def build_word_tokenizer(words: list[str] | None = None) -> Tokenizer:
    """A WordLevel tokenizer with BERT's pair template ([CLS] A [SEP] B [SEP], types 0/1)."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + (words or WORDS))}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return tokenizer


def build_counting_classifier(path: Path, tokenizer: Tokenizer, busy_matmuls: int = 0) -> Path:
    """ONNX graph: logits = [0, count(good) - count(bad)] over real tokens; batch-invariant.

    `busy_matmuls` adds that many 256x256 MatMuls per token whose result is multiplied by zero:
    work that costs time like a real encoder's (so queues form under load) without changing any
    score.
    """
    good = tokenizer.token_to_id("good")
    bad = tokenizer.token_to_id("bad")
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    consts = [
        helper.make_tensor("good_id", TensorProto.INT64, [], [good]),
        helper.make_tensor("bad_id", TensorProto.INT64, [], [bad]),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
    ]
    nodes = [
        helper.make_node("Equal", ["input_ids", "good_id"], ["is_good"]),
        helper.make_node("Equal", ["input_ids", "bad_id"], ["is_bad"]),
        helper.make_node("Cast", ["is_good"], ["good_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["is_bad"], ["bad_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["good_f", "bad_f"], ["signed"]),
        helper.make_node("Mul", ["signed", "mask_f"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["diff"], keepdims=1),
        helper.make_node("Sub", ["diff", "diff"], ["zero"]),
    ]
    logit = "diff"
    if busy_matmuls:
        rng = np.random.default_rng(0)
        consts += [
            numpy_helper.from_array(np.array([-1], np.int64), "last_axis"),
            numpy_helper.from_array(rng.normal(size=(1, 256)).astype(np.float32), "w_in"),
            numpy_helper.from_array((rng.normal(size=(256, 256)) / 16).astype(np.float32), "w_busy"),
            numpy_helper.from_array(np.zeros(1, np.float32), "nothing"),
        ]
        nodes += [
            helper.make_node("Unsqueeze", ["mask_f", "last_axis"], ["mask3"]),
            helper.make_node("MatMul", ["mask3", "w_in"], ["h0"]),
        ]
        for i in range(busy_matmuls):
            nodes.append(helper.make_node("MatMul", [f"h{i}", "w_busy"], [f"h{i + 1}"]))
        nodes += [
            helper.make_node("ReduceSum", [f"h{busy_matmuls}"], ["busy_total"], keepdims=0),
            helper.make_node("Mul", ["busy_total", "nothing"], ["busy_zero"]),
            helper.make_node("Add", ["diff", "busy_zero"], ["diff_busy"]),
        ]
        logit = "diff_busy"
    nodes.append(helper.make_node("Concat", ["zero", logit], ["logits"], axis=1))
    graph = helper.make_graph(nodes, "counting_classifier", inputs, [output], initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_counting_artifact(
    repository: Path,
    spec: MetricSpec,
    tmp: Path,
    evidence: EvidenceCombiner | None = None,
    busy_matmuls: int = 0,
) -> Path:
    """A complete, verified repository entry around the counting classifier."""
    tokenizer = build_word_tokenizer()
    tok_path = tmp / "tokenizer.json"
    tokenizer.save(str(tok_path))
    model = build_counting_classifier(tmp / "counting.onnx", tokenizer, busy_matmuls)
    return publish_entry(
        repository,
        spec,
        model=model,
        tokenizer=tok_path,
        source={"checkpoint": "tests/tiny_models.py:counting_classifier"},
        export={"quantization": {"mode": "none"}},
        parity={},
        evidence=evidence,
    )


def expected_score(good: int, bad: int) -> float:
    """Softmax probability of 'supported' for logits [0, good - bad]."""
    return float(1.0 / (1.0 + np.exp(-(good - bad))))


def build_tiny_bert(folder: Path, labels: list[str], seed: int = 0) -> Path:
    """A randomly initialised 2-layer BERT classifier checkpoint with the word tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer()
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = BertForSequenceClassification(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )
    fast.save_pretrained(str(folder))
    return folder
