"""Locust scenario for a lunaserve metric: open-loop Poisson arrivals at the plan's stage rates.

Run by `lunaserve signoff` (never imported by tests: gevent patches the process), or by hand:

    python -m locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8000 \
        --plan build/signoff/run/plan.json --csv build/run/locust --html build/run/locust.html \
        --json-file build/run/locust --stop-timeout 30

Distributed: the same command with `--master --expect-workers N`, and N processes of
`python -m locust -f loadtest/locustfile.py --worker --master-host HOST --plan plan.json`.

Open loop: every user keeps its own Poisson schedule and sends when an arrival is due, whatever
the server is doing; the shape sets the user count so users x per-user rate = the stage's target.
A user still waiting on its last answer sends late, and how late is recorded (`lag_ms`). Each
request's stage, latency, status and tokens go to `samples.csv`; the gate judges each stage from
them when the run ends and sets the exit code (0 only if every judged stage passes).
"""

from __future__ import annotations

import json
import logging
import random
import time
import zlib
from dataclasses import astuple
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, LoadTestShape, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtest.arrivals import first_gap, next_gap
from loadtest.gate import judge, write_verdict
from loadtest.plan import LoadPlan
from loadtest.samples import Sample, write_samples
from loadtest.shape import ShapeController, StageSchedule

log = logging.getLogger("lunaserve.loadtest")
STAGE_MESSAGE = "lunaserve_stage"
SAMPLES_KEY = "lunaserve_samples"
NOT_SENT = -2  # status of an arrival still pending when its user stopped
BAD_BODY = -1  # status of a 200 without one result per item


class RunState:
    """Per-process state of a run: the plan, the current stage and the samples recorded."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.stage = 0
        self.samples: list[Sample] = []
        self.controller: ShapeController | None = None

    def drain(self) -> list[Sample]:
        taken, self.samples = self.samples, []
        return taken


def _state(environment: Environment) -> RunState:
    state: RunState = environment.lunaserve  # type: ignore[attr-defined]
    return state


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument("--plan", type=str, default="", help="lunaserve load plan (JSON)")


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    path = environment.parsed_options.plan if environment.parsed_options else ""
    if not path:
        raise SystemExit("loadtest/locustfile.py needs --plan PATH (written by `lunaserve signoff`)")
    plan = LoadPlan.read(Path(path))
    state = RunState(plan)
    environment.lunaserve = state  # type: ignore[attr-defined]
    ScoringUser.network_timeout = plan.client_timeout_s
    ScoringUser.connection_timeout = min(plan.client_timeout_s, 10.0)
    runner = environment.runner
    if runner is None:
        return

    def on_stage(environment: Environment, msg: Any, **_: Any) -> None:
        _state(environment).stage = int(msg.data)

    if not isinstance(runner, MasterRunner):
        runner.register_message(STAGE_MESSAGE, on_stage)
    if isinstance(runner, WorkerRunner):

        def report(client_id: str, data: dict[str, Any]) -> None:
            data[SAMPLES_KEY] = [astuple(s) for s in state.drain()]

        environment.events.report_to_master.add_listener(report)
        return
    if isinstance(runner, MasterRunner):

        def collect(client_id: str, data: dict[str, Any]) -> None:
            state.samples.extend(Sample(*row) for row in data.get(SAMPLES_KEY, []))

        environment.events.worker_report.add_listener(collect)
    environment.events.quitting.add_listener(_on_quitting)


def _on_quitting(environment: Environment, **_: Any) -> None:
    """Judge every stage from the samples and set the process's exit code (master or local)."""
    state = _state(environment)
    out = Path(state.plan.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = sorted(state.samples, key=lambda s: s.sent_at)
    write_samples(out / "samples.csv", samples)
    windows = state.controller.windows() if state.controller else []
    verdict = judge(state.plan, windows, samples)
    write_verdict(out / "gate.json", verdict)
    for check in verdict["checks"]:
        log.info(
            "%s %s: %s (target %s)",
            "PASS" if check["passed"] else "FAIL",
            check["name"],
            check["measured"],
            check["target"],
        )
    environment.process_exit_code = 0 if verdict["passed"] else 1


class ScoringUser(FastHttpUser):
    """One connection with its own arrival schedule (Poisson or evenly spaced)."""

    concurrency = 1
    network_timeout = 30.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        state = _state(self.environment)
        self.plan = state.plan
        seed = zlib.crc32(f"{state.plan.seed}:{id(self)}:{time.time_ns()}".encode())
        self.rng = random.Random(seed)
        poisson, rate = self.plan.arrivals == "poisson", self.plan.per_user_qps
        self.next_due = time.time() + first_gap(self.rng, rate, poisson=poisson)  # next arrival not yet sent
        self.busy_until = 0.0  # when the last request ended
        gevent.sleep(max(0.0, self.next_due - time.time()))

    def _gap(self) -> float:
        return next_gap(self.rng, self.plan.per_user_qps, poisson=self.plan.arrivals == "poisson")

    def wait_time(self) -> float:
        """Time to the next arrival on this user's schedule; the schedule never slips."""
        return max(0.0, self.next_due - time.time())

    def on_stop(self) -> None:
        """Arrivals that fell due while this user was still waiting on an answer were never sent:
        record them as failures (status -2), so a generator or server that falls behind cannot
        look on target. (Arrivals due after the last answer belong to a user being stopped on
        purpose, at a stage change or the end, and are not owed.)"""
        state = _state(self.environment)
        while self.next_due < self.busy_until:
            state.samples.append(Sample(self.next_due, 0.0, NOT_SENT, 0.0, state.stage, 0))
            self.next_due += self._gap()

    @task
    def score(self) -> None:
        state = _state(self.environment)
        index = min(state.stage, len(self.plan.stages) - 1)
        stage = self.plan.stages[index]
        pool, sizes = self.plan.pools[stage.pool], self.plan.pool_tokens[stage.pool]
        picks = [self.rng.randrange(len(pool)) for _ in range(self.plan.items_per_request)]
        body = json.dumps(self.plan.body([pool[i] for i in picks]))
        due, self.next_due = self.next_due, self.next_due + self._gap()
        sent = time.time()
        lag_ms = max(0.0, (sent - due) * 1000)
        with self.client.post(
            self.plan.path,
            data=body,
            headers={"Content-Type": "application/json"},
            name=stage.name,
            catch_response=True,
        ) as response:
            status = int(response.status_code or 0)
            if status == 200:
                if len(response.json().get("results", [])) != len(picks):
                    status = BAD_BODY
                    response.failure("wrong number of results")
            else:
                response.failure(f"HTTP {status}")
        self.busy_until = time.time()
        latency_ms = (self.busy_until - sent) * 1000
        state.samples.append(Sample(sent, latency_ms, status, lag_ms, index, sum(sizes[i] for i in picks)))


class StagedShape(LoadTestShape):
    """Warm-up, average, peak, recovery (or whatever stages the plan lists), then stop."""

    def tick(self) -> tuple[int, float] | None:
        runner = self.runner
        assert runner is not None
        state = _state(runner.environment)
        if state.controller is None:

            def on_stage(index: int) -> None:
                state.stage = index
                runner.send_message(STAGE_MESSAGE, index)

            state.controller = ShapeController(
                StageSchedule(state.plan), self.get_run_time, time.time, on_stage
            )
        return state.controller.tick()
