"""Broken model files are refused with a clear log line and never served; the rest keeps serving.

Pass criteria, against a live server started on a repository where one metric is sound and
four are broken (a model file whose bytes no longer match the manifest's sha256, a missing
tokenizer, a model file that is not ONNX but carries a matching hash, a spec whose labels the
model's outputs do not match): the server becomes ready, serves the sound metric, answers 404
for each broken one, lists none of them as active, and its log names each broken folder with
the reason.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.server import LocalServer
from service.runtime.artifact import sha256_file
from tests.conftest import counting_spec
from tests.tiny_models import write_counting_artifact

BROKEN = {  # metric -> what its log line must say
    "hash_mismatch": "does not match the manifest",
    "missing_tokenizer": "tokenizer.json is listed in the manifest but missing",
    "not_onnx": "Protobuf parsing failed",
    "labels_mismatch": "outputs of shape (2,) for 3 labels",
}


def _rehash(folder: Path, name: str) -> None:
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][name] = {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
    manifest_path.write_text(json.dumps(manifest, indent=2))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    root = tmp_path_factory.mktemp("faults")
    repo, work = root / "repo", root / "work"
    work.mkdir()
    write_counting_artifact(repo, counting_spec(), work)
    folders = {name: write_counting_artifact(repo, counting_spec(name), work) for name in BROKEN}
    with (folders["hash_mismatch"] / "model.onnx").open("ab") as model:
        model.write(b"tampered")
    (folders["missing_tokenizer"] / "tokenizer.json").unlink()
    (folders["not_onnx"] / "model.onnx").write_bytes(b"this is not an onnx graph")
    _rehash(folders["not_onnx"], "model.onnx")
    three_labels = counting_spec("labels_mismatch", labels=["hallucinated", "supported", "unsure"])
    manifest_path = folders["labels_mismatch"] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["spec"] = three_labels.model_dump(mode="json")
    manifest_path.write_text(json.dumps(manifest, indent=2))
    with LocalServer(repo, root / "server.log", ["--batching.calibrate", "false"]) as running:
        yield running


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def score(server: LocalServer, metric: str) -> int:
    request = urllib.request.Request(
        f"{server.url}/v1/metrics/{metric}/score",
        data=json.dumps({"items": [{"output": "good", "context": "the city"}]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_sound_metric_serves_and_no_broken_one_does(server: LocalServer) -> None:
    assert get(f"{server.url}/readyz")[0] == 200
    assert score(server, "context_adherence") == 200
    for name in BROKEN:
        assert score(server, name) == 404, name
    _, listed = get(f"{server.url}/v1/metrics")
    active = {m["name"] for m in listed["metrics"] if m["active_version"]}  # type: ignore[union-attr, index]
    assert active == {"context_adherence"}


def test_each_broken_folder_is_named_in_the_log_with_its_reason(server: LocalServer) -> None:
    log = Path(server.log_path).read_text()
    for name, reason in BROKEN.items():
        refusal = f"ERROR service.registry: not serving {name}/1:"
        lines = [line for line in log.splitlines() if refusal in line]
        assert len(lines) == 1, f"no log line refuses {name}:\n{log[-3000:]}"
        assert reason in lines[0], (name, lines[0])
