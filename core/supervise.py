"""Child processes under supervision: each in its own process group, all stopped together on
SIGTERM or SIGINT (terminated, then killed after a grace period), restarted with back-off.

A launcher enters a :class:`Supervisor`, starts its children through it, waits, and turns the
:class:`Outcome` into its exit status: 0 when it was asked to stop, 1 when a child failed for
good. Children get SIGTERM whichever of the two signals the launcher got; a second signal
skips the rest of the grace period. On Linux a child started from the main thread also dies
with its launcher, SIGKILL included, so no orphan keeps serving a port.

A stop signal that arrives while children are being started (or, with no children, while an
in-process server runs) raises :class:`Stopped` in the block, which unwinds its context
managers as Ctrl-C would; the supervisor's ``with`` swallows it and records the outcome.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.process import BaseProcess
from types import FrameType, TracebackType
from typing import IO, Any, Self, TypeVar, cast

log = logging.getLogger(__name__)

FAILURE_EXIT = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Linux's prctl option: the signal this process gets when the thread that forked it ends.
_PR_SET_PDEATHSIG = 1

Handle = subprocess.Popen[bytes] | BaseProcess
Starter = Callable[[], Handle]
H = TypeVar("H", subprocess.Popen[bytes], BaseProcess)


class Stopped(BaseException):
    """SIGTERM or SIGINT arrived while a supervised block was not waiting on its children."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class ChildFailed(RuntimeError):
    """A supervised child failed for good (it exited, or kept crashing); the message says how."""


@dataclasses.dataclass(frozen=True)
class Policy:
    """How children are stopped and restarted."""

    # Restart a child that exits on its own (workers); without, its exit ends supervision.
    restart: bool = False
    # SIGTERM first; a child still alive this long after is SIGKILLed.
    grace_s: float = 10.0
    # The delay before a restart: the first, doubling after each quick failure up to the most.
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    # A child that lived this long was healthy: its failure counts as the first of a new series.
    stable_after_s: float = 60.0
    # This many quick failures in a row of one child (a crash loop) end supervision.
    max_quick_failures: int = 5
    poll_s: float = 0.1


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How supervision ended: a stop signal, or a child that failed for good."""

    signum: int | None = None
    failure: str | None = None

    @property
    def exit_code(self) -> int:
        """0 when asked to stop, 1 when a child failed."""
        return FAILURE_EXIT if self.failure is not None else 0

    def raise_for_failure(self) -> None:
        """Raise :class:`ChildFailed` if a child failed."""
        if self.failure is not None:
            raise ChildFailed(self.failure)


@dataclasses.dataclass
class _Slot:
    name: str
    start: Starter
    backoff_s: float
    handle: Handle | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    quick_failures: int = 0


class Supervisor:
    """Starts children, stops them all on SIGTERM/SIGINT, restarts them as ``policy`` says.

    Signal handlers are installed only from the main thread; elsewhere the caller stops it.
    """

    def __init__(self, name: str, policy: Policy | None = None) -> None:
        self.name = name
        self.policy = policy or Policy()
        self.outcome: Outcome | None = None
        self.restarts = 0
        self._slots: list[_Slot] = []
        self._signum: int | None = None
        # Until wait() runs, a stop signal raises Stopped; while a child starts it is deferred,
        # so a child is never started without being recorded.
        self._raise = True
        self._kill_now = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        self._raise = False
        try:
            self.stop()
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous.clear()
        if isinstance(exc, Stopped):
            self.outcome = Outcome(signum=exc.signum)
            return True
        return False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._signum is not None:
            # A second signal: stop waiting for a graceful exit.
            self._kill_now = True
            return
        # Nothing is logged here: a handler that writes may interrupt a write to the same stream.
        self._signum = signum
        if self._raise:
            raise Stopped(signum)

    def start(self, name: str, start: Callable[[], H]) -> H:
        """Start a child with ``start`` (see :func:`spawn_command`, :func:`python_process`)."""
        slot = _Slot(name=name, start=start, backoff_s=self.policy.backoff_initial_s)
        self._slots.append(slot)
        handle = self._launch(slot)
        if self._raise and self._signum is not None:
            raise Stopped(self._signum)
        return cast(H, handle)  # what ``start`` returned

    def _launch(self, slot: _Slot) -> Handle:
        deferred, self._raise = self._raise, False
        try:
            slot.handle = slot.start()
            slot.started_at = time.monotonic()
        finally:
            self._raise = deferred
        log.info("%s: started %s (pid %d)", self.name, slot.name, slot.handle.pid)
        return slot.handle

    def wait(self) -> Outcome:
        """Supervise until a stop signal or a child's failure for good; returns the outcome."""
        self._raise = False
        outcome: Outcome | None = None
        while outcome is None:
            if self._signum is not None:
                outcome = Outcome(signum=self._signum)
                break
            now = time.monotonic()
            for slot in self._slots:
                failure = self._check(slot, now)
                if failure is not None:
                    outcome = Outcome(failure=failure)
                    break
            else:
                time.sleep(self.policy.poll_s)
        self.outcome = outcome
        return outcome

    def _check(self, slot: _Slot, now: float) -> str | None:
        if slot.restart_at is not None:
            if now >= slot.restart_at:
                slot.restart_at = None
                self.restarts += 1
                self._launch(slot)
            return None
        assert slot.handle is not None
        code = exit_code(slot.handle)
        if code is None:
            return None
        lived = now - slot.started_at
        what = (
            f"{slot.name} (pid {slot.handle.pid}) exited with {describe_exit(code)} "
            f"after {lived:.1f} s"
        )
        if not self.policy.restart:
            log.error("%s: %s", self.name, what)
            return what
        if lived >= self.policy.stable_after_s:
            slot.quick_failures, slot.backoff_s = 0, self.policy.backoff_initial_s
        slot.quick_failures += 1
        if slot.quick_failures >= self.policy.max_quick_failures:
            what += f"; {slot.quick_failures} failures in a row, giving up"
            log.error("%s: %s", self.name, what)
            return what
        log.warning(
            "%s: %s; restart %d in %.3g s", self.name, what, self.restarts + 1, slot.backoff_s
        )
        slot.restart_at = now + slot.backoff_s
        slot.backoff_s = min(slot.backoff_s * 2, self.policy.backoff_max_s)
        return None

    def stop(self) -> None:
        """Stop every child: SIGTERM to its group, SIGKILL once the grace period is over."""
        self._raise = False
        if self._signum is not None:
            log.info("%s: %s received, stopping", self.name, signal.Signals(self._signum).name)
        handles = [slot.handle for slot in self._slots if slot.handle is not None]
        for slot in self._slots:
            slot.restart_at = None
        stop_processes(handles, grace_s=self.policy.grace_s, forced=lambda: self._kill_now)


def exit_code(handle: Handle) -> int | None:
    """A child's exit status (``-N`` if signal N killed it), None while it runs."""
    if isinstance(handle, subprocess.Popen):
        return handle.poll()
    return handle.exitcode


def describe_exit(code: int) -> str:
    """``code 3`` or ``signal SIGKILL``."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def _pid(handle: Handle) -> int:
    assert handle.pid is not None, "a child that was never started"
    return handle.pid


def _signal_group(pid: int, sig: int) -> None:
    # The child's group (itself, and whatever it started); a Python child may not have made
    # its group yet, then the child alone.
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_processes(
    handles: Sequence[Handle], *, grace_s: float, forced: Callable[[], bool] | None = None
) -> None:
    """SIGTERM each running child's group; SIGKILL those alive after ``grace_s`` (or ``forced``)."""
    alive = [handle for handle in handles if handle.pid and exit_code(handle) is None]
    for handle in alive:
        _signal_group(_pid(handle), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline and not (forced and forced()):
        time.sleep(0.02)
        alive = [handle for handle in alive if exit_code(handle) is None]
    for handle in alive:
        log.warning("pid %d did not stop in %g s: killing it", handle.pid, grace_s)
        _signal_group(_pid(handle), signal.SIGKILL)
    for handle in alive:
        if isinstance(handle, subprocess.Popen):
            handle.wait(grace_s)
        else:
            handle.join(grace_s)


@functools.cache
def _libc_prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up before a fork (never in the child); None off Linux."""
    if sys.platform != "linux":
        return None
    prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    return prctl


def _die_with(parent_pid: int, prctl: Callable[..., int]) -> None:
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # The parent may have died before the request took effect: then nobody will signal.
    if os.getppid() != parent_pid:
        os._exit(FAILURE_EXIT)


def _dies_with_parent() -> bool:
    # The death signal follows the thread that forks, not the process: only the main thread is
    # sure to last as long as the children it starts.
    return threading.current_thread() is threading.main_thread()


def spawn_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdout: IO[bytes] | int | None = None,
    stderr: IO[bytes] | int | None = None,
) -> subprocess.Popen[bytes]:
    """Run ``argv`` in a new process group (a terminal's Ctrl-C reaches only its launcher)."""
    prctl = _libc_prctl() if _dies_with_parent() else None
    parent = os.getpid()
    return subprocess.Popen(
        list(argv),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        process_group=0,
        preexec_fn=(lambda: _die_with(parent, prctl)) if prctl is not None else None,
    )


def python_process(
    target: Callable[..., object], *args: object, name: str
) -> Callable[[], BaseProcess]:
    """A starter of ``target(*args)`` in a fresh (spawned) Python process of its own group."""
    context = multiprocessing.get_context("spawn")

    def start() -> BaseProcess:
        parent = os.getpid() if _dies_with_parent() else None
        process = context.Process(
            target=_child_main, args=(parent, target, args), name=name, daemon=False
        )
        process.start()
        return process

    return start


def _child_main(
    parent_pid: int | None, target: Callable[..., object], args: tuple[object, ...]
) -> None:
    # Its own group: a terminal's Ctrl-C reaches the supervisor alone, which stops it in order.
    os.setpgid(0, 0)
    if parent_pid is not None and (prctl := _libc_prctl()) is not None:
        _die_with(parent_pid, prctl)
    target(*args)
