"""No cross-talk between rows: under concurrent load every answer is the score of its own item.

Pass criteria, against a live uvicorn server on two tiny counting metrics (the score of an item
is a known function of its "good" and "bad" words, so every score names the item it came from):
600 requests from 24 concurrent clients, mixing both metrics, both traffic classes, 1 to 4 items
of short and windowed lengths, are each answered 200 with every item's score equal to the same
item scored alone, in item order; batches held several rows (fewer batches than rows).
"""

from __future__ import annotations

import json
import random
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from loadtest.server import LocalServer
from tests.conftest import counting_spec
from tests.e2e.test_server_e2e import metric_value
from tests.tiny_models import expected_score, write_counting_artifact

REQUESTS, CLIENTS = 600, 24


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    root = tmp_path_factory.mktemp("integrity")
    (root / "work").mkdir()
    write_counting_artifact(root / "repo", counting_spec(), root / "work")
    other = counting_spec(
        "toxicity_like", use_case="observability", required_fields=["output"],
        text_pair={"first": ["output"], "second": []},
    )  # fmt: skip
    write_counting_artifact(root / "repo", other, root / "work")
    args = ["--batching.calibrate", "false", "--deadlines.guardrail_timeout_ms", "60000",
            "--deadlines.observability_timeout_ms", "60000"]  # fmt: skip
    with LocalServer(root / "repo", root / "server.log", args) as running:
        yield running


def make_item(rng: random.Random) -> tuple[dict[str, str], int, int]:
    good, bad = rng.randrange(0, 6), rng.randrange(0, 6)
    words = ["good"] * good + ["bad"] * bad
    rng.shuffle(words)
    filler = ["x"] * (rng.choice([0, 5, 150]))  # 150: longer than one 64-token window
    context = " ".join([*filler, "the", "city"])
    return {"output": " ".join(words) or "the", "context": context}, good, bad


def post(url: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.loads(response.read())


def alone(server: LocalServer, metric: str, item: dict[str, str]) -> float:
    status, body = post(f"{server.url}/v1/metrics/{metric}/score", {"items": [item]})
    assert status == 200
    return float(body["results"][0]["score"])


def test_every_answer_is_its_own_items_score(
    server: LocalServer, record_property: Callable[[str, object], None]
) -> None:
    rng = random.Random(7)
    plans = []
    for _ in range(REQUESTS):
        metric = rng.choice(["context_adherence", "toxicity_like"])
        made = [make_item(rng) for _ in range(rng.randint(1, 4))]
        plans.append((metric, rng.choice(["guardrail", "observability"]), made))
    reference: dict[tuple[str, str], float] = {}
    for metric, _, made in plans[:40]:  # each distinct (metric, item) scored alone, sequentially
        for item, _, _ in made:
            key = (metric, json.dumps(item, sort_keys=True))
            reference.setdefault(key, alone(server, metric, item))

    def run(plan: tuple[str, str, list[tuple[dict[str, str], int, int]]]) -> list[float]:
        metric, traffic_class, made = plan
        status, body = post(
            f"{server.url}/v1/metrics/{metric}/score",
            {"items": [m[0] for m in made], "traffic_class": traffic_class},
        )
        assert status == 200, body
        assert body["metric"] == metric
        return [r["score"] for r in body["results"]]

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(run, plans))
    for (metric, _, made), scores in zip(plans, answers, strict=True):
        assert len(scores) == len(made)
        for (item, good, bad), score in zip(made, scores, strict=True):
            key = (metric, json.dumps(item, sort_keys=True))
            if key in reference:
                assert score == pytest.approx(reference[key], abs=1e-6)
            if metric == "toxicity_like" or len(item["context"].split()) < 50:  # one window: known value
                assert score == pytest.approx(expected_score(good, bad), abs=1e-5), (item, score)
    metrics = urllib.request.urlopen(f"{server.url}/metrics", timeout=30).read().decode()
    batches = metric_value(metrics, "lunaserve_batch_size_count", metric="context_adherence")
    rows = metric_value(metrics, "lunaserve_batch_size_sum", metric="context_adherence")
    assert 0 < batches < rows  # batches held several rows: what could have been mixed up was
    checked = sum(len(made) for _, _, made in plans)
    record_property("requests / items checked", f"{len(plans)} / {checked}")
    record_property("context_adherence rows per batch (mean)", round(rows / batches, 2))
