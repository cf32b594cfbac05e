"""shutdown_all: stop every component in the reference's order, each step isolated and time-boxed.

Every component follows the ``Component`` contract (``opencode_addons.component``), which says
how a sync or async ``shutdown()`` is run. A sync one runs in a dedicated daemon thread, so a
hanging one can be timed out too and cannot block interpreter exit. A step that raises or times
out is reported and the next step still runs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from opencode_addons import component_registry
from opencode_addons.component_registry import SHUTDOWN_ORDER, check_component

log = logging.getLogger(__name__)

OK = "ok"
ERROR = "error"
TIMEOUT = "timeout"
NOT_STARTED = "not started"
# How long a timed-out coroutine gets to honour its cancellation before it is abandoned.
_CANCEL_GRACE = 1.0


@dataclass
class ShutdownStep:
    """The outcome of stopping one component."""

    name: str
    outcome: str
    message: str = ""
    duration_s: float = 0.0


@dataclass
class ShutdownReport:
    """Every step of one ``shutdown_all`` call, in the order they ran."""

    steps: list[ShutdownStep] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no step failed or timed out."""
        return all(step.outcome in (OK, NOT_STARTED) for step in self.steps)

    def step(self, name: str) -> ShutdownStep:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"no shutdown step named {name!r}")

    def __str__(self) -> str:
        header = ("component", "outcome", "duration", "message")
        rows = [(s.name, s.outcome, f"{s.duration_s * 1000:.1f} ms", s.message) for s in self.steps]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]

        def line(row: tuple[str, str, str, str]) -> str:
            name, outcome, duration, message = row
            cells = [name.ljust(widths[0]), outcome.ljust(widths[1]), duration.rjust(widths[2])]
            return "  ".join([*cells, message]).rstrip()

        return "\n".join([line(header)] + [line(row) for row in rows])


class _StepTimeout(Exception):
    pass


async def shutdown_all(
    timeout_per_component: float = 5.0,
    *,
    components: Mapping[str, Any] | None = None,
) -> ShutdownReport:
    """Stop ``components`` (default: the component registry) in ``SHUTDOWN_ORDER``.

    Names outside the reference order are stopped afterwards, in the mapping's order. Components
    taken from the component registry are unregistered, so a second call finds nothing to do.
    """
    timeout = _check_timeout(timeout_per_component)
    from_runtime = components is None
    targets = component_registry.registered() if components is None else dict(components)
    names = [*SHUTDOWN_ORDER, *(n for n in targets if n not in SHUTDOWN_ORDER)]
    report = ShutdownReport()
    for name in names:
        component = targets.get(name)
        if component is None:
            report.steps.append(ShutdownStep(name, NOT_STARTED, "not registered"))
            continue
        step = await _stop_component(name, component, timeout)
        report.steps.append(step)
        if from_runtime:
            component_registry.unregister(name, component)
    log.info("shutdown_all finished (%s)", "ok" if report.ok else "with problems")
    return report


def shutdown_all_sync(
    timeout_per_component: float = 5.0,
    *,
    components: Mapping[str, Any] | None = None,
) -> ShutdownReport:
    """``shutdown_all`` for code without an event loop (e.g. an ``atexit`` hook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(shutdown_all(timeout_per_component, components=components))
    raise RuntimeError(
        "shutdown_all_sync() cannot run inside a running event loop; use 'await shutdown_all()'"
    )


def _check_timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"timeout_per_component must be a number > 0, got {value!r}")
    return float(value)


async def _stop_component(name: str, component: Any, timeout: float) -> ShutdownStep:
    started = time.perf_counter()
    log.info("shutting down %s", name)
    try:
        await _invoke_shutdown(name, component, timeout)
    except _StepTimeout:
        step = ShutdownStep(name, TIMEOUT, f"did not finish within {timeout:g}s")
    except Exception as error:
        step = ShutdownStep(name, ERROR, f"{type(error).__name__}: {error}")
    else:
        step = ShutdownStep(name, OK)
    step.duration_s = time.perf_counter() - started
    if step.outcome == OK:
        log.info("%s shut down in %.3fs", name, step.duration_s)
    else:
        log.error("%s shutdown %s: %s", name, step.outcome, step.message)
    return step


async def _invoke_shutdown(name: str, component: Any, timeout: float) -> None:
    shutdown = check_component(component).shutdown
    deadline = time.monotonic() + timeout
    if inspect.iscoroutinefunction(shutdown):
        await _await_within(shutdown(), timeout)
        return
    result = await _call_in_thread(name, shutdown, timeout)
    if inspect.isawaitable(result):
        await _await_within(result, max(deadline - time.monotonic(), 0.0))


async def _await_within(awaitable: Awaitable[Any], timeout: float) -> Any:
    """Await ``awaitable`` as a task; cancel it and raise ``_StepTimeout`` after ``timeout``."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.wait({task}, timeout=_CANCEL_GRACE)
    if not task.done():
        log.error("a shutdown coroutine ignored its cancellation and was abandoned")
    raise _StepTimeout


async def _call_in_thread(name: str, function: Callable[[], Any], timeout: float) -> Any:
    # A dedicated daemon thread rather than the default executor: asyncio.run() waits for the
    # executor's threads on exit, so one hanging call there would hang the whole shutdown.
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def deliver(error: BaseException | None, value: Any) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        value: Any = None
        try:
            value = function()
        except Exception as exc:
            error = exc
        except BaseException as exc:  # reported; a worker thread never re-raises
            error = RuntimeError(f"shutdown raised {exc!r}")
        try:
            loop.call_soon_threadsafe(deliver, error, value)
        except RuntimeError:
            log.warning("%s shutdown finished after its event loop closed", name)

    threading.Thread(target=run, name=f"shutdown-{name}", daemon=True).start()
    return await _await_within(future, timeout)
