"""ScoringRoute reads a body by FastAPI's rules: the same odd bodies, sent to an ordinary FastAPI
route and to one of this class taking the same model, get the same status and the same errors."""

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from service.api.errors import install_error_handlers
from service.api.schemas import MultiScoreRequest, ScoreRequest
from service.api.scoring_route import ScoringRoute

JSON = {"content-type": "application/json"}
BODIES: list[tuple[str, bytes, dict[str, str]]] = [
    ("valid", b'{"items": [{"output": "a", "context": "b"}]}', JSON),
    ("valid, charset", b'{"items": [{"output": "a"}]}', {"content-type": "application/json; charset=utf-8"}),
    ("valid, +json", b'{"items": [{"output": "a"}]}', {"content-type": "application/vnd.lunaserve+json"}),
    ("upper-case type", b'{"items": [{"output": "a"}]}', {"content-type": "Application/JSON"}),
    ("empty", b"", JSON),
    ("no content type", b'{"items": [{"output": "a"}]}', {}),
    ("text/plain", b'{"items": [{"output": "a"}]}', {"content-type": "text/plain"}),
    ("malformed", b'{"items": [', JSON),
    ("not UTF-8", b'{"items": "\xff\xfe"}', JSON),
    ("an array", b"[1, 2]", JSON),
    ("nested too deep", b"[" * 100_000 + b"]" * 100_000, JSON),
    ("schema", b'{"items": [], "traffic_class": "vip", "timeout_ms": 1}', JSON),
    ("extra field", b'{"items": [{"output": "a", "colour": "red"}]}', JSON),
    ("lone surrogate", b'{"items": [{"output": "\\ud800"}]}', JSON),
    ("metrics twice", b'{"items": [{"output": "a"}], "metrics": ["m", "m"]}', JSON),
]


def _apps(model: type[ScoreRequest]) -> tuple[FastAPI, FastAPI]:
    plain, lean = FastAPI(), FastAPI()
    for app in (plain, lean):
        install_error_handlers(app)

    @plain.post("/score/{metric}")
    async def plain_route(metric: str, body: model) -> dict[str, object]:  # type: ignore[valid-type]
        return {"metric": metric, "items": len(body.items)}

    router = APIRouter(route_class=ScoringRoute)

    @router.post("/score/{metric}")
    async def lean_route(metric: str, body: model, request: Request) -> Response:  # type: ignore[valid-type]
        return JSONResponse({"metric": metric, "items": len(body.items)})

    lean.include_router(router)
    return plain, lean


async def _answer(app: FastAPI, content: bytes, headers: dict[str, str]) -> tuple[int, object]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/score/m", content=content, headers=headers)
    data = response.json()
    if isinstance(data, dict) and "errors" in data:  # problem+json: compare what is wrong, not ids
        return response.status_code, data["errors"]
    return response.status_code, data


@pytest.mark.parametrize("model", [ScoreRequest, MultiScoreRequest])
@pytest.mark.parametrize(("case", "content", "headers"), BODIES, ids=[b[0] for b in BODIES])
async def test_a_body_gets_the_answer_fastapi_gives_it(
    model: type[ScoreRequest], case: str, content: bytes, headers: dict[str, str]
) -> None:
    plain, lean = _apps(model)
    expected = await _answer(plain, content, headers)
    assert await _answer(lean, content, headers) == expected
    if case.startswith("valid") and model is ScoreRequest:
        assert expected == (200, {"metric": "m", "items": 1})  # the cases do what they say
    if case in ("empty", "malformed", "text/plain", "schema"):
        assert expected[0] == 422
    if case in ("not UTF-8", "nested too deep"):
        assert expected[0] == 400
