"""Graceful shutdown on SIGTERM/SIGINT, and an ``atexit`` hook for whatever is still open.

``install_signal_handlers()`` makes the first SIGTERM or SIGINT run ``shutdown_all`` over the
components registered in ``opencode_addons.component_registry`` (in the reference's order, each
step time-boxed by ``timeout_per_component``): the checkpoint manager rejects its pending
checkpoints with reason ``"shutdown"``, checkpoints requested on the stream itself stay pending in
the file (``DurableStream.resume()`` picks them up on the next start), and the durable stream
closes its store (trimmed, and synced in ``fsync``/``group`` mode). Then the process exits with
``SystemExit(128 + signum)`` (143 for SIGTERM, 130 for SIGINT) or ``exit_code`` when given; SIGINT
does not raise ``KeyboardInterrupt``. A watchdog thread ends the process with ``os._exit`` if it
has not exited once every component had its full timeout (plus a second), for instance because
the application swallowed ``SystemExit``.

With an event loop (given as ``loop``, or running when this is called) the handlers are
installed with ``loop.add_signal_handler`` and the shutdown runs as a task on that loop; the
``SystemExit`` it raises ends ``loop.run_forever``/``asyncio.run``. Without one they are plain
``signal.signal`` handlers running ``shutdown_all_sync`` in the main thread. Either way this must
be called from the main thread. Further signals while the shutdown runs are logged and ignored.

``install_atexit_hook()`` registers a hook that runs ``shutdown_all_sync`` at interpreter exit if
any component is still registered; it never raises.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterable
from typing import Any, Callable, Optional

from opencode_addons import component_registry
from opencode_addons.shutdown import (
    ShutdownReport,
    _check_timeout,
    shutdown_all,
    shutdown_all_sync,
)

log = logging.getLogger(__name__)

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Added to the watchdog's deadline after every component had its full timeout.
_WATCHDOG_GRACE = 1.0

_state_lock = threading.Lock()
# The active installation (its uninstall function), if any.
_installed: Optional[Callable[[], None]] = None
_atexit_hook: Optional[Callable[[], None]] = None


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class _Handler:
    """What one installation does when a signal arrives."""

    def __init__(
        self,
        timeout: float,
        exit_code: Optional[int],
        loop: Optional[asyncio.AbstractEventLoop],
    ) -> None:
        self.timeout = timeout
        self.exit_code = exit_code
        self.loop = loop
        self.started = False
        self.task: Optional[asyncio.Task[Any]] = None

    def code_for(self, signum: int) -> int:
        return self.exit_code if self.exit_code is not None else 128 + signum

    def begin(self, signum: int) -> bool:
        """True for the first signal; later ones are logged and ignored."""
        if self.started:
            log.warning("%s received while shutting down; ignored", _signal_name(signum))
            return False
        self.started = True
        registered = component_registry.registered()
        log.warning(
            "%s received: shutting down %d component(s) (%gs each), then exiting with %d",
            _signal_name(signum),
            len(registered),
            self.timeout,
            self.code_for(signum),
        )
        _log_pending_state(registered)
        deadline = self.timeout * (len(registered) + 1) + _WATCHDOG_GRACE
        _start_watchdog(deadline, self.code_for(signum))
        return True

    def finish(self, signum: int, report: Optional[ShutdownReport]) -> None:
        if report is not None:
            level = logging.INFO if report.ok else logging.ERROR
            log.log(level, "shutdown after %s:\n%s", _signal_name(signum), report)
        _flush_logs()
        raise SystemExit(self.code_for(signum))

    # -- without a loop: signal.signal ------------------------------------------------------

    def on_signal(self, signum: int, _frame: Any) -> None:
        if not self.begin(signum):
            return
        loop = _running_loop()
        if loop is not None:
            # A loop started after installation runs in this (main) thread: shut down on it.
            # call_soon_threadsafe also wakes the loop if it is waiting in select().
            self.loop = loop
            loop.call_soon_threadsafe(self.start_task, signum)
            return
        report: Optional[ShutdownReport] = None
        try:
            report = shutdown_all_sync(self.timeout)
        except Exception:
            log.exception("shutdown after %s failed", _signal_name(signum))
        self.finish(signum, report)

    # -- with a loop: loop.add_signal_handler --------------------------------------------------

    def on_loop_signal(self, signum: int) -> None:
        if self.begin(signum):
            self.start_task(signum)

    def start_task(self, signum: int) -> None:
        assert self.loop is not None
        self.task = self.loop.create_task(self.shutdown_async(signum))

    async def shutdown_async(self, signum: int) -> None:
        report: Optional[ShutdownReport] = None
        try:
            report = await shutdown_all(self.timeout)
        except asyncio.CancelledError:
            # The application's main coroutine ended meanwhile and asyncio.run is cancelling
            # every task. Finish the job: the loop keeps running until this task is done.
            log.warning("shutdown after %s was cancelled; finishing it", _signal_name(signum))
            report = await self.finish_cancelled(signum)
        except Exception:
            log.exception("shutdown after %s failed", _signal_name(signum))
        # SystemExit raised by a task propagates out of the loop (run_forever/asyncio.run).
        self.finish(signum, report)

    async def finish_cancelled(self, signum: int) -> Optional[ShutdownReport]:
        # Sync shutdowns interrupted by the cancellation go on in their threads; let them end
        # (a second shutdown() call would return at once while the first is still closing).
        deadline = self.timeout
        for thread in threading.enumerate():
            if thread.name.startswith("shutdown-") and thread.is_alive():
                await asyncio.get_running_loop().run_in_executor(None, thread.join, deadline)
        try:
            # Tasks created now are not in the set asyncio.run is cancelling.
            return await shutdown_all(self.timeout)
        except BaseException:
            log.exception("shutdown after %s failed", _signal_name(signum))
            return None


def _running_loop() -> Optional[asyncio.AbstractEventLoop]:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _log_pending_state(registered: dict[str, Any]) -> None:
    """Say what survives in the file for the next start."""
    stream = registered.get("durable_stream")
    if stream is None or getattr(stream, "closed", True):
        return
    try:
        checkpoints = len(stream.pending_checkpoints)
        intents = len(stream.active_intents)
    except Exception:
        return
    if checkpoints or intents:
        log.info(
            "%d pending checkpoint(s) and %d active intent(s) stay in %s for resume()",
            checkpoints,
            intents,
            stream.path,
        )


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def _start_watchdog(seconds: float, code: int) -> None:
    def expire() -> None:
        log.error("the process did not exit %.1fs after the shutdown signal; forcing it", seconds)
        _flush_logs()
        os._exit(code)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.name = "opencode-addons-exit-watchdog"
    timer.start()


def install_signal_handlers(
    *,
    loop: Optional[asyncio.AbstractEventLoop] = None,
    timeout_per_component: float = 5.0,
    signals: Iterable[int] = DEFAULT_SIGNALS,
    exit_code: Optional[int] = None,
) -> Callable[[], None]:
    """Run ``shutdown_all`` and exit on the first of ``signals``; return an uninstall function.

    See the module docstring. Installing again replaces the previous installation (whose
    handlers are restored first). The returned function restores the handlers that were there
    before and may be called any number of times. Must be called from the main thread.
    """
    global _installed
    timeout = _check_timeout(timeout_per_component)
    if exit_code is not None and (
        isinstance(exit_code, bool) or not isinstance(exit_code, int) or not 0 <= exit_code <= 255
    ):
        raise ValueError(f"exit_code must be an int between 0 and 255, got {exit_code!r}")
    signums = list(dict.fromkeys(signal.Signals(s) for s in signals))
    if not signums:
        raise ValueError("signals must name at least one signal")
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_signal_handlers() must be called from the main thread")
    with _state_lock:
        previous_install = _installed
    if previous_install is not None:
        previous_install()
    if loop is None:
        loop = _running_loop()
    handler = _Handler(timeout, exit_code, loop)
    previous = {s: signal.getsignal(s) for s in signums}
    installed: list[signal.Signals] = []
    try:
        for s in signums:
            if loop is not None:
                loop.add_signal_handler(s, handler.on_loop_signal, int(s))
            else:
                signal.signal(s, handler.on_signal)
            installed.append(s)
    except BaseException:
        _restore(loop, installed, previous)
        raise
    done = False

    def uninstall() -> None:
        global _installed
        nonlocal done
        with _state_lock:
            if done:
                return
            done = True
            if _installed is uninstall:
                _installed = None
        _restore(loop, installed, previous)
        log.debug("signal handlers for %s removed", ", ".join(s.name for s in installed))

    with _state_lock:
        _installed = uninstall
    log.debug(
        "signal handlers for %s installed (%s)",
        ", ".join(s.name for s in installed),
        "on the event loop" if loop is not None else "signal.signal",
    )
    return uninstall


def _restore(
    loop: Optional[asyncio.AbstractEventLoop],
    signums: list[signal.Signals],
    previous: dict[signal.Signals, Any],
) -> None:
    for s in signums:
        try:
            if loop is not None and not loop.is_closed():
                loop.remove_signal_handler(s)
            handler = previous[s]
            # None means the handler was not installed from Python; the default is the best guess.
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        except (ValueError, RuntimeError, OSError) as error:
            log.warning("could not restore the handler of %s: %s", s.name, error)


def _close_at_exit(timeout: float) -> None:
    try:
        if not component_registry.registered():
            return
        log.info("closing the components still registered at exit")
        report = shutdown_all_sync(timeout)
        if not report.ok:
            log.error("shutdown at exit:\n%s", report)
    except BaseException:
        # Never raise at exit (a KeyboardInterrupt here included).
        try:
            log.exception("shutdown at exit failed")
        except BaseException:
            pass


def install_atexit_hook(timeout_per_component: float = 5.0) -> Callable[[], None]:
    """Close whatever is still registered when the interpreter exits; return an unregister function.

    Installing again replaces the previous hook. The hook never raises.
    """
    global _atexit_hook
    timeout = _check_timeout(timeout_per_component)

    def hook() -> None:
        _close_at_exit(timeout)

    with _state_lock:
        previous, _atexit_hook = _atexit_hook, hook
        if previous is not None:
            atexit.unregister(previous)
        atexit.register(hook)

    def unregister() -> None:
        global _atexit_hook
        with _state_lock:
            atexit.unregister(hook)
            if _atexit_hook is hook:
                _atexit_hook = None

    return unregister
