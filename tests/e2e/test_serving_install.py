"""The serving install the Dockerfile makes (`pip install -c constraints.txt .`, no extras, the
same files copied) imports no torch and no scikit-learn (the CLI reads the training modules' option
names only) and serves the shipped metric, in a venv of its own.

No Docker engine runs on these machines, so the image itself is only linted (hadolint, `make
lint`); this test builds what goes into it: the same sources, constraints and extras.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from loadtest.server import free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
COPIED = ["pyproject.toml", "README.md", "constraints.txt", "lunaserve", "service", "models", "loadtest"]


def dockerfile_copies() -> list[str]:
    """What the Dockerfile's build stage copies into its source folder."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM")]
    build_stage = lines[stages[0] : stages[1]]
    copied: list[str] = []
    for line in build_stage:
        if line.startswith("COPY ") and "--from" not in line:
            copied += line.split()[1:-1]
    return copied


@pytest.fixture(scope="module")
def serving_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serving")
    source = root / "src"
    source.mkdir()
    for name in dockerfile_copies():
        path = ROOT / name
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "-c", "constraints.txt", "."],
        cwd=source, capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    return venv


def test_the_test_copies_what_the_dockerfile_copies() -> None:
    assert sorted(dockerfile_copies()) == sorted(COPIED)


def test_serving_install_has_no_torch(serving_venv: Path) -> None:
    freeze = subprocess.run(
        [str(serving_venv / "bin" / "pip"), "freeze"], capture_output=True, text=True
    ).stdout
    names = {line.split("==")[0].lower() for line in freeze.splitlines()}
    assert not names & {"torch", "transformers", "optimum", "scikit-learn", "locust"}, sorted(names)
    probe = (
        "import sys, lunaserve.cli, service.app;"
        " print(sorted(m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run(
        [str(serving_venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, cwd="/"
    )
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_serving_install_serves_the_shipped_metric(serving_venv: Path, tmp_path: Path) -> None:
    port = free_port()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [str(serving_venv / "bin" / "lunaserve"), "serve", "--repository", str(ROOT / "repository"),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, cwd="/",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        ready = False
        for _ in range(600):  # start-up poll: up to 60 s
            if server.poll() is not None:
                break
            try:
                ready = httpx.get(url + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready:
                break
            time.sleep(0.1)
        assert ready, (tmp_path / "server.log").read_text()[-3000:]
        item = {
            "input": "Where is the Eiffel Tower?",
            "context": "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris.",
            "output": "It is in Paris, on the Champ de Mars.",
        }
        response = httpx.post(url + "/v1/metrics/context_adherence/score", json={"items": [item]}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["results"][0]["passed"] is True
        newest = max(
            int(p.name) for p in (ROOT / "repository" / "context_adherence").iterdir() if p.name.isdigit()
        )
        assert body["version"] == str(newest)
    finally:
        server.terminate()
        server.wait(30)
        log.close()
