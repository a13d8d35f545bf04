"""A child process that stops with its parent: `asgard demo`'s Dagster run and `asgard ui`'s
`dagster dev`. The child runs in its own process group (a terminal's Ctrl-C reaches it only
through asgard, once) and each signal asking asgard to stop becomes a SIGINT to it."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .run_log import EVENT_LINE

# the events with which an interrupted run would go on: Dagster retries an interrupted step
# that has a retry policy (as after a preemption) and starts the steps that do not depend
# on a failed one
GOES_ON = {"STEP_START", "STEP_UP_FOR_RETRY", "STEP_RESTARTED"}


def interruptible() -> None:
    """SIGINT back to its default in the child: a process started in the background
    inherits it ignored, and `dagster dev` then ignores SIGTERM too (it maps one to the
    other)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Forwarded:
    """The signals that asked the child to stop, each passed on to it as one SIGINT."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.received: signal.Signals | None = None

    def start(self, cmd: list[str], **popen) -> subprocess.Popen:
        """The child, in its own process group, SIGINT at its default."""
        self.child = subprocess.Popen(cmd, process_group=0, preexec_fn=interruptible, **popen)
        return self.child

    def __call__(self, signum, frame) -> None:
        self.received = self.received or signal.Signals(signum)
        self.interrupt()

    def interrupt(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGINT)

    def insisting(self, lines: Iterator[str]) -> Iterator[str]:
        """The child's Dagster event log, with SIGINT again whenever an interrupted run
        goes on."""
        for line in lines:
            if (
                self.received is not None
                and (event := EVENT_LINE.search(line))
                and event["event"] in GOES_ON
            ):
                self.interrupt()
            yield line

    def wait(self, grace: float = 5.0) -> int:
        """The child's exit code, once it exits. Asked to stop, past ``grace`` SIGINT until
        it does: a SIGINT sent for a line read late can land as the child's interpreter
        exits, interrupting a thread pool's exit hook, and the interpreter then waits
        forever for that pool's idle worker (seen: `asgard demo` killed mid-run, the run
        ended, its process never exited); another SIGINT ends that wait."""
        if self.received is not None:
            try:
                return self.child.wait(grace)
            except subprocess.TimeoutExpired:
                self.stop_child()
        return self.child.wait()

    def stop_child(self, every: float = 2.0, within: float = 60.0) -> None:
        """SIGINT until the child exits (no log read any more: asgard itself failed)."""
        deadline = time.monotonic() + within
        while self.child is not None and time.monotonic() < deadline:
            self.interrupt()
            try:
                self.child.wait(every)
                return
            except subprocess.TimeoutExpired:
                continue


@contextmanager
def forwarded_signals() -> Iterator[Forwarded]:
    """Ctrl-C, kill (SIGTERM) and a closed terminal each become one SIGINT to the child:
    `dagster dev` shuts down its servers, a run ends as failed, its steps interrupted,
    instead of going on alone after asgard is gone. A signal asgard was started ignoring
    (``nohup``'s SIGHUP, a script's ``cmd &`` SIGINT) stays ignored."""
    forwarded = Forwarded()
    kept = {
        signum: signal.signal(signum, forwarded)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        if signal.getsignal(signum) is not signal.SIG_IGN
    }
    try:
        yield forwarded
    except BaseException:
        if forwarded.received is not None:  # e.g. the terminal went with the signal
            forwarded.stop_child()
        raise
    finally:
        for signum, handler in kept.items():
            signal.signal(signum, handler)
