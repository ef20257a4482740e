"""Payloads sized with the metric's own tokenizer, from rows or from the seeded generator."""

from __future__ import annotations

import random

import pytest

from loadtest.payloads import PayloadBuilder, PayloadError, draw_sizes
from loadtest.requirements import LoadPoint, TokenDistribution
from service.runtime.encoding import PairEncoder
from tests.conftest import counting_spec
from tests.tiny_models import build_word_tokenizer


def encoder(**changes: object) -> PairEncoder:
    return PairEncoder(build_word_tokenizer(), counting_spec(**changes))


@pytest.mark.parametrize("target", [8, 16, 40, 64, 200])
def test_payloads_generated_items_have_the_exact_token_count(target: int) -> None:
    enc = encoder()
    payload = PayloadBuilder(enc, seed=3).build(target)
    assert payload.tokens == target
    assert enc.encode(payload.item).tokens == payload.model_tokens  # what the server will run
    if target <= 64:  # fits the tiny metric's 64-token window: no windowing
        assert payload.model_tokens == target


def test_payloads_from_rows_use_their_text() -> None:
    rows = [{"input": "who", "output": "paris is the capital", "context": "the capital of france is paris"}]
    payload = PayloadBuilder(encoder(), rows, seed=0).build(30)
    assert payload.tokens == 30
    assert payload.item["output"] == "paris is the capital"
    assert payload.item["context"].startswith("the capital of france is paris the capital")


def test_payloads_are_reproducible_from_the_seed() -> None:
    a = [p.item for p in PayloadBuilder(encoder(), seed=7).pool([20, 30, 40])]
    b = [p.item for p in PayloadBuilder(encoder(), seed=7).pool([20, 30, 40])]
    assert a == b


def test_payloads_refuse_sizes_the_server_would_refuse() -> None:
    with pytest.raises(PayloadError, match="policy is reject"):
        PayloadBuilder(encoder(long_input={"mode": "reject"}), seed=0).build(100)
    with pytest.raises(PayloadError, match="below the smallest item"):
        PayloadBuilder(encoder(), seed=0).build(3)


def test_payloads_lognormal_sizes_keep_the_mean_and_bounds() -> None:
    dist = TokenDistribution(kind="lognormal", sigma=0.4, min_tokens=20, max_tokens=2000)
    sizes = draw_sizes(LoadPoint(qps=1, input_tokens=200), dist, 4000, random.Random(0))
    assert min(sizes) >= 20 and max(sizes) <= 2000
    assert sum(sizes) / len(sizes) == pytest.approx(200, rel=0.03)
    assert draw_sizes(LoadPoint(qps=1, input_tokens=50), TokenDistribution(), 3, random.Random(0)) == [50] * 3
