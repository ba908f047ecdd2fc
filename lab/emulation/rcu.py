"""Expedited RCU grace periods while Open vSwitch removes the lab's ports: teardown about 6 times faster.

The userspace datapath reads every port through an AF_PACKET socket. Removing a port closes that socket,
and the kernel's ``packet_release`` waits for a whole RCU grace period (``synchronize_rcu``), about 14 ms
on this kernel (HZ=250, lazy RCU), in ovs-vswitchd's single main thread, one port after another: sampled
kernel stacks of that thread during ``del-br`` put 88% of the removal there and 10% in the ``rcu_barrier``
of closing the bridge's own tap; vswitchd's CPU is 5% of the time (``bench/ovs_removal.py``). Batching
cannot help (one transaction already removes every bridge), the wait is per socket.

``/sys/kernel/rcu_expedited`` makes ``synchronize_rcu`` force the grace period (an IPI to each CPU)
instead of waiting for it: about 2 ms per port. It is machine-wide, so it is set only while the bridges
go, only from 0 (a machine already set to 1 is left alone), and put back at once; the value it replaced
is saved in the run directory first, so that ``python -m lab clean`` puts it back after a crash.
"""

from __future__ import annotations

import os

KNOB = "/sys/kernel/rcu_expedited"
SAVED = "rcu_expedited.saved"  # in the run directory, while the knob is ours


class ExpeditedRcu:
    """``with ExpeditedRcu(run_path):`` grace periods are expedited inside the block (when the kernel lets us)."""

    def __init__(self, run_path: str, knob: str = KNOB) -> None:
        self.saved = os.path.join(run_path, SAVED)
        self.knob = knob

    def __enter__(self) -> ExpeditedRcu:
        try:
            with open(self.knob) as f:
                if f.read().strip() != "0":
                    return self
            with open(self.saved, "w") as f:
                f.write("0\n")
            with open(self.knob, "w") as f:
                f.write("1\n")
        except OSError:  # no such knob (another kernel, a container): removal is only slower
            self._forget()
        return self

    def __exit__(self, *exc: object) -> None:
        restore(os.path.dirname(self.saved), self.knob)

    def _forget(self) -> None:
        try:
            os.unlink(self.saved)
        except FileNotFoundError:
            pass


def restore(run_path: str, knob: str = KNOB) -> str | None:
    """Put back the value a run replaced, if it did; what was done, for ``lab clean``'s report."""
    saved = os.path.join(run_path, SAVED)
    try:
        with open(saved) as f:
            value = f.read().strip()
    except FileNotFoundError:
        return None
    if value in ("0", "1"):
        with open(knob, "w") as f:
            f.write(value + "\n")
    os.unlink(saved)
    return f"{knob} back to {value}"
