"""`lunaserve serve`: settings from environment and CLI, logging, then uvicorn on one worker.

`lunaserve.cli` parses the flags (the settings, added to its `serve` subparser by
pydantic-settings) and hands over a function that builds the `Settings`.

One process, one event loop, one inference thread per model: scale with replicas, not workers.
On SIGTERM readiness fails at once, accepted requests finish, then the process exits.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from types import FrameType

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from service.app import create_app
from service.config import Settings
from service.runtime.artifact import find_artifacts

log = logging.getLogger("lunaserve")


class DrainingServer(uvicorn.Server):
    """uvicorn's server, marking the app as draining the moment a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        state = getattr(self._app.state, "lunaserve", None)
        if state is not None:
            state.registry.start_draining()
        super().handle_exit(sig, frame)


def serve(load_settings: Callable[[], Settings]) -> int:
    """Serve until stopped; 2 when the settings are invalid or there is nothing to serve."""
    try:
        settings = load_settings()
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "settings"
            print(f"lunaserve serve: invalid setting {where}: {error['msg']}", file=sys.stderr)
        return 2
    if not find_artifacts(settings.repository):
        print(
            f"lunaserve serve: no <metric>/<version>/manifest.json under {settings.repository}:"
            " nothing to serve (--repository DIR)",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    log.info("settings (non-default): %s", json.dumps(settings.non_default()))
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
        lifespan="on",
    )
    DrainingServer(config, app).run()
    return 0
