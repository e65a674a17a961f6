"""The per-record fast path through Faust's consumer: used only when flow runs, Faust's own path otherwise."""

from __future__ import annotations

import asyncio
import warnings

import faust
from faust.transport.consumer import Consumer
from mode import Service
from mode.utils.locks import Event

from stream.live import fastpath


class FlowService(Service):
    """A real mode service with the ``suspend_flow`` event Faust's consumer has."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = Event()


async def _callback(log: list[str]) -> str:
    log.append("called")
    return "delivered"


def test_install_patches_only_the_pinned_version() -> None:
    assert faust.__version__ == fastpath.PATCHED_FOR, "faust-streaming was upgraded: re-check the fast path"
    assert fastpath.install() is True
    assert Consumer.wait_first is fastpath._wait_first


def test_running_flow_awaits_the_callback_directly_and_closes_the_suspend_wait() -> None:
    async def run() -> tuple[object, list[str]]:
        service, log = FlowService(), []
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a never-awaited coroutine would warn
            result = await fastpath._wait_first(service, _callback(log), service.suspend_flow.wait())
        return result, log

    result, log = asyncio.run(run())
    assert log == ["called"]
    assert (result.results, result.stopped) == (["delivered"], False)


def test_suspended_flow_takes_faust_own_path() -> None:
    async def run() -> tuple[object, list[str]]:
        service, log = FlowService(), []
        service.suspend_flow.set()  # a rebalance: the suspend wait wins at once
        result = await fastpath._wait_first(service, asyncio.sleep(5), service.suspend_flow.wait())
        return result, log

    result, _ = asyncio.run(asyncio.wait_for(run(), timeout=2))
    assert result.stopped is False
    assert len(result.done) == 1 and result.results == [True]  # the suspend wait won; the callback did not run
