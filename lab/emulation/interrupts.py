"""Ctrl-C, SIGTERM and SIGHUP while a lab network exists: stop at once, then tear down without a break.

While the network is built or runs, the first of these signals raises ``KeyboardInterrupt`` where the
program is, so the ``with`` block unwinds into the teardown. From that moment (and during any teardown,
also one that follows a normal end) further signals are *deferred*: teardown cannot be interrupted
half-way, which used to leave bridges, links and the controller behind while the lab printed that it had
torn everything down. The first deferred signal prints one line saying so; once the teardown has
finished, a signal that arrived during a normal teardown is raised as ``KeyboardInterrupt``, so the
program still exits as interrupted, with the network gone.

Signal handlers can only be set from the main thread; elsewhere (a worker thread of a notebook or a
benchmark) the guard does nothing and the caller's own handling applies.
"""

from __future__ import annotations

import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def signal_name(signum: int) -> str:
    return {signal.SIGINT: "Ctrl-C (SIGINT)"}.get(signum, signal.Signals(signum).name)


def _say(line: str) -> None:
    try:  # after SIGHUP the terminal may be gone; the teardown matters more than the line
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


class InterruptGuard:
    """Owns SIGINT, SIGTERM and SIGHUP for the life of one network (``install`` .. ``restore``)."""

    def __init__(self) -> None:
        self.previous: dict[int, object] = {}
        self.deferring = False
        self.deferred: list[int] = []
        self.interrupted_by: int | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self.previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
        for sig in SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        if self.deferring:
            if not self.deferred:
                _say(f"{signal_name(signum)} received during teardown: finishing the teardown first "
                     "(it cannot be interrupted half-way), then stopping")
            self.deferred.append(signum)
            return
        self.interrupted_by = signum
        self.deferring = True  # a second signal while the stack unwinds must not skip the teardown
        raise KeyboardInterrupt(signal_name(signum))

    def begin_teardown(self) -> None:
        self.deferring = True

    def restore(self) -> None:
        """Give the signals back; raise KeyboardInterrupt if one arrived during a teardown nobody asked
        to interrupt (the caller then stops too, with nothing left to tear down)."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
        pending = self.deferred and self.interrupted_by is None
        self.deferring, self.deferred = False, []
        if pending:
            raise KeyboardInterrupt("signal received during teardown")
