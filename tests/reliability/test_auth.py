"""Authentication over a real socket: 401 and 403 as documented, probes open, keys never logged.

Pass criteria, against a live server with one scoring key and one admin key (set through the
environment, logging at debug): a missing header, another scheme, a wrong key and a key of
another length get 401 with `WWW-Authenticate`; the admin route with the scoring key gets 403,
with the admin key it works; /livez and /readyz answer without a key; and no key, right or
wrong, appears anywhere in the server's log.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.server import LocalServer
from tests.conftest import counting_spec
from tests.tiny_models import write_counting_artifact

SCORING_KEY = "score-key-6f1d0c2b9a8e"
ADMIN_KEY = "admin-key-3e7a5b9c1d24"
WRONG_KEYS = ["score-key-6f1d0c2b9a8f", "short", "score-key-6f1d0c2b9a8e-and-more"]
SCORE = "/v1/metrics/context_adherence/score"
BODY = json.dumps({"items": [{"output": "good", "context": "the city"}]}).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    root = tmp_path_factory.mktemp("auth")
    (root / "work").mkdir()
    write_counting_artifact(root / "repo", counting_spec(), root / "work")
    env = {
        "LUNASERVE_AUTH__API_KEYS": json.dumps([{"key": SCORING_KEY}]),
        "LUNASERVE_AUTH__ADMIN_KEYS": json.dumps([ADMIN_KEY]),
        "LUNASERVE_LOG_LEVEL": "debug",
    }
    args = ["--batching.calibrate", "false"]
    with LocalServer(root / "repo", root / "server.log", args, env=env) as running:
        yield running


def call(server: LocalServer, method: str, path: str, authorization: str | None = None,
         body: bytes | None = None) -> tuple[int, dict[str, str]]:  # fmt: skip
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    request = urllib.request.Request(f"{server.url}{path}", data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}


@pytest.mark.parametrize(
    "authorization",
    [None, f"Basic {SCORING_KEY}", f"bearer{SCORING_KEY}", *(f"Bearer {k}" for k in WRONG_KEYS)],
    ids=["missing", "basic-scheme", "no-space", "one-char-off", "short", "longer"],
)
def test_scoring_without_the_right_key_is_401(server: LocalServer, authorization: str | None) -> None:
    status, headers = call(server, "POST", SCORE, authorization, BODY)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")


def test_the_right_keys_work_where_they_belong(server: LocalServer) -> None:
    assert call(server, "POST", SCORE, f"Bearer {SCORING_KEY}", BODY)[0] == 200
    assert call(server, "POST", "/v1/admin/reload", f"Bearer {SCORING_KEY}")[0] == 403
    assert call(server, "POST", "/v1/admin/reload", f"Bearer {ADMIN_KEY}")[0] == 200
    assert call(server, "POST", "/v1/admin/reload")[0] == 401
    for probe in ("/livez", "/readyz"):
        assert call(server, "GET", probe)[0] == 200


def test_no_key_appears_in_the_log(server: LocalServer) -> None:
    for key in WRONG_KEYS:  # make sure every key has been sent at least once
        call(server, "POST", SCORE, f"Bearer {key}", BODY)
    call(server, "POST", SCORE, f"Bearer {SCORING_KEY}", BODY)
    log = Path(server.log_path).read_text()
    assert "DEBUG" in log or "INFO" in log  # the log was captured
    for key in [SCORING_KEY, ADMIN_KEY, *WRONG_KEYS[:1], WRONG_KEYS[2]]:
        assert key not in log, key
