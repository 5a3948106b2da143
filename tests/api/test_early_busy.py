"""The admission gate in front of the model routes (`app.api.early_busy`, issue 13 item 6): requests over
the gate's capacity are held before their body is read, admitted first come first served when a place
frees, refused with the documented 503 `busy` when the hold ends, and the line of held requests is bounded."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI, Request

from app.api.early_busy import AdmissionGate, EarlyBusyMiddleware, admission_capacity
from app.api.errors import install_error_handlers
from app.core.config import Settings

ANALYZE = "http://test/api/v1/analyze"


def _settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"device": "cpu", "max_queue_size": 4, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


class ModelRoute:
    """A model route that waits until the test lets it answer; it records the bodies it read."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def app(self, settings: Settings, gate: AdmissionGate, queue_depth: list[int]) -> FastAPI:
        app = FastAPI()
        install_error_handlers(app)
        # The middleware reads the model queue's depth from the process services, as in the server.
        app.state.services = SimpleNamespace(manager=_Depth(queue_depth))
        app.add_middleware(EarlyBusyMiddleware, settings=settings, gate=gate)

        @app.post("/api/v1/analyze")
        async def analyze(request: Request) -> dict[str, int]:
            self.bodies.append(await request.body())
            self.entered.set()
            await self.release.wait()
            return {"read": len(self.bodies[-1])}

        return app


class _Depth:
    def __init__(self, value: list[int]) -> None:
        self._value = value

    @property
    def queue_depth(self) -> int:
        return self._value[0]


async def _until(check: object) -> None:
    """Yield to the event loop until `check()` holds (no fixed sleep: the other tasks make progress)."""
    while not check():  # type: ignore[operator]
        await asyncio.sleep(0)


def _assert_busy(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json() == {
        "error": {"code": "busy", "message": "The model is busy with other requests; try again in a few seconds."}
    }


def test_a_held_request_is_admitted_when_a_place_frees_and_the_line_is_bounded() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(capacity=1, max_held=1)
        route = ModelRoute()
        app = route.app(_settings(busy_hold_s=10), gate, [0])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
            first = asyncio.create_task(client.post(ANALYZE, content=b"first"))
            await route.entered.wait()
            second = asyncio.create_task(client.post(ANALYZE, content=b"second body"))
            await _until(lambda: gate.held == 1)
            # The line is full: the next request is refused at once, in the documented shape.
            _assert_busy(await client.post(ANALYZE, content=b"third"))
            assert route.bodies == [b"first"] and not second.done()  # the held request's body is not read yet
            route.release.set()
            assert (await first).json() == {"read": 5}
            assert (await second).json() == {"read": 11}  # admitted after all, first in line
        assert route.bodies == [b"first", b"second body"]
        assert gate.admitted == 0 and gate.held == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("hold_s", [0.2, 0], ids=["held-then-refused", "refused-at-once"])
def test_a_request_that_gets_no_place_is_refused_with_busy(hold_s: float) -> None:
    async def scenario() -> None:
        gate = AdmissionGate(capacity=1, max_held=8)
        route = ModelRoute()
        app = route.app(_settings(busy_hold_s=hold_s), gate, [0])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
            first = asyncio.create_task(client.post(ANALYZE, content=b"first"))
            await route.entered.wait()
            _assert_busy(await client.post(ANALYZE, content=b"second"))  # after the hold, or at once with none
            assert gate.held == 0 and route.bodies == [b"first"]
            route.release.set()
            assert (await first).status_code == 200
        assert gate.admitted == 0

    asyncio.run(scenario())


def test_a_model_queue_full_of_other_work_holds_the_request_until_it_drains() -> None:
    async def scenario() -> None:
        depth = [4]  # chat or jobs fill the model queue (MAX_QUEUE_SIZE=4); the gate itself is empty
        gate = AdmissionGate(capacity=5, max_held=8)
        route = ModelRoute()
        route.release.set()
        app = route.app(_settings(busy_hold_s=10), gate, depth)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
            request = asyncio.create_task(client.post(ANALYZE, content=b"body"))
            await _until(lambda: gate.admitted == 1)  # it holds a place while it waits for the queue
            assert route.bodies == [] and not request.done()
            depth[0] = 3
            assert (await request).json() == {"read": 4}
        assert gate.admitted == 0

    asyncio.run(scenario())


def test_a_cancelled_waiter_gives_back_its_place_in_line() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(capacity=1, max_held=2)
        assert await gate.enter(0)
        waiting = asyncio.create_task(gate.enter(10))
        await _until(lambda: gate.held == 1)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert gate.held == 0
        gate.leave()
        assert gate.admitted == 0 and await gate.enter(0)

    asyncio.run(scenario())


def test_a_hold_leaves_half_the_body_timeout_to_read_the_body() -> None:
    def hold_s(**overrides: object) -> float:
        return EarlyBusyMiddleware(FastAPI(), _settings(**overrides)).hold_s

    assert hold_s(busy_hold_s=2) == 2
    assert hold_s(busy_hold_s=10, http_body_timeout_s=4) == 2


def test_the_capacity_is_the_model_queue_plus_one_running_batch() -> None:
    assert admission_capacity(_settings()) == 4 + 1  # CPU: one request per generate call
    assert admission_capacity(_settings(device="cuda")) == 4 + 32
    assert admission_capacity(_settings(max_batch_size=8)) == 4 + 8
