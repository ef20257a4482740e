"""The OpenAPI document of this deployment: one scoring route per served metric, with its rules.

Which fields an item needs depends on the metric (`required_fields` in its spec: context
adherence needs an output and a context, a toxicity metric only an output), and the request
limits (items per call, characters per field) on the server's settings. A single templated
`/v1/metrics/{metric}/score` cannot say either, so a schema-valid body was rejected with 422
and generated clients could not know why. The document therefore lists
`/v1/metrics/<name>/score` for every metric served now, each with an item schema requiring that
metric's fields (not blank) and the settings' limits; the templated route still answers every
name (404 for unknown ones) but is left out of the document. The document follows the
repository: it is rebuilt when the served metrics change (a reload adds one).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.config import LimitSettings
from service.loaded_metric import TEXT_CHAR
from service.runtime.spec import MetricSpec

SCORE_TEMPLATE = "/v1/metrics/{metric}/score"


def served_metrics_openapi(
    app: FastAPI, limits: LimitSettings, specs: Callable[[], dict[str, MetricSpec]]
) -> Callable[[], dict[str, Any]]:
    """An `app.openapi` replacement: the framework's document plus a route per served metric."""
    cache: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        served = specs()
        key = tuple(sorted((name, spec.version) for name, spec in served.items()))
        if key not in cache:
            cache.clear()
            cache[key] = _document(app, limits, served)
        return cache[key]

    return openapi


def _document(app: FastAPI, limits: LimitSettings, served: dict[str, MetricSpec]) -> dict[str, Any]:
    base = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = base["components"]["schemas"]
    _limit_items(schemas, limits)
    template = base["paths"].pop(SCORE_TEMPLATE)["post"]
    for name in sorted(served):
        spec = served[name]
        item, request = f"ScoreItem_{name}", f"ScoreRequest_{name}"
        schemas[item] = _item_schema(schemas["ScoreItem"], spec, limits)
        schemas[request] = copy.deepcopy(schemas["ScoreRequest"])
        schemas[request]["title"] = request
        schemas[request]["properties"]["items"]["items"] = {"$ref": f"#/components/schemas/{item}"}
        operation = copy.deepcopy(template)
        operation["operationId"] = f"score_{name}"
        operation["summary"] = f"Score items with {name}"
        operation["description"] = (
            f"{spec.description.strip()} Items need: {', '.join(f.value for f in spec.required_fields)}."
            f" Version {spec.version} serves now; a hot swap changes the version, not this route."
        )
        operation["parameters"] = [p for p in operation.get("parameters", []) if p["name"] != "metric"]
        body = operation["requestBody"]["content"]["application/json"]
        body["schema"] = {"$ref": f"#/components/schemas/{request}"}
        base["paths"][f"/v1/metrics/{name}/score"] = {"post": operation}
    return base


def _limit_items(schemas: dict[str, Any], limits: LimitSettings) -> None:
    """The settings' limits on every request: items per call, characters per field."""
    for request in ("ScoreRequest", "MultiScoreRequest"):
        schemas[request]["properties"]["items"]["maxItems"] = limits.max_items
    for field in schemas["ScoreItem"]["properties"].values():
        for variant in field.get("anyOf", [field]):
            if variant.get("type") == "string":
                variant["maxLength"] = limits.max_field_chars


def _item_schema(generic: dict[str, Any], spec: MetricSpec, limits: LimitSettings) -> dict[str, Any]:
    """The generic item with the metric's required fields as non-blank strings."""
    schema = copy.deepcopy(generic)
    schema["title"] = f"ScoreItem_{spec.name}"
    required = [f.value for f in spec.required_fields]
    schema["required"] = required
    for name in required:
        field = schema["properties"][name]
        schema["properties"][name] = {
            "type": "string",
            "minLength": 1,
            "maxLength": limits.max_field_chars,
            "pattern": TEXT_CHAR,  # the server refuses a required field that is only whitespace
            "title": field.get("title", name.title()),
            "description": field.get("description", ""),
        }
    return schema
