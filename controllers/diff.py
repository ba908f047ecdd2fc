"""What to send a switch so that it holds the new program: the difference, in a safe order.

kube-proxy must not disturb established connections when endpoints change. Established connections
never revisit the service tables (conntrack already holds their NAT), so replacing only the flows and
groups that changed is enough; reinstalling everything would also reset counters the lab reads.
Order matters (``controllers.openflow.messages``): a group must exist before a flow points at it, a
modified group only after the flows its new endpoints need, and a flow must be gone before its group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING

from controllers.pipeline import Flow, Group, Program

if TYPE_CHECKING:
    from controllers.incremental import Touched


@dataclass
class Changes:
    add_groups: list[Group] = field(default_factory=list)
    modify_groups: list[Group] = field(default_factory=list)
    add_flows: list[Flow] = field(default_factory=list)  # new, or same match with a new cookie
    modify_flows: list[Flow] = field(default_factory=list)  # same match and cookie, new actions
    delete_flows: list[Flow] = field(default_factory=list)
    delete_groups: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(x) for x in (self.add_groups, self.modify_groups, self.add_flows,
                                    self.modify_flows, self.delete_flows, self.delete_groups))


def diff(installed: Program, desired: Program) -> Changes:
    changes = Changes()
    for gid, group in desired.groups.items():
        old = installed.groups.get(gid)
        if old is None:
            changes.add_groups.append(group)
        elif old != group:
            changes.modify_groups.append(group)
    for key, flow in desired.flows.items():
        old = installed.flows.get(key)
        if old is None or old.cookie != flow.cookie:
            changes.add_flows.append(flow)
        elif old.actions != flow.actions:
            changes.modify_flows.append(flow)
    changes.delete_flows = [f for k, f in installed.flows.items() if k not in desired.flows]
    changes.delete_groups = [gid for gid in installed.groups if gid not in desired.groups]
    return changes


def diff_touched(touched: Touched, desired: Program) -> Changes:
    """``diff`` of only the flows and groups an incremental update touched (``controllers.incremental``):
    what they were before it against what ``desired`` holds now, without walking the rest; and only
    those not sent already in parts (``Touched.sent``)."""
    changes = Changes()
    flows_sent, groups_sent = touched.sent
    for gid, old in islice(touched.groups.items(), groups_sent, None):
        group = desired.groups.get(gid)
        if group is None:
            if old is not None:
                changes.delete_groups.append(gid)
        elif old is None:
            changes.add_groups.append(group)
        elif old != group:
            changes.modify_groups.append(group)
    for key, old in islice(touched.flows.items(), flows_sent, None):
        flow = desired.flows.get(key)
        if flow is None:
            if old is not None:
                changes.delete_flows.append(old)
        elif old is None or old.cookie != flow.cookie:
            changes.add_flows.append(flow)
        elif old.actions != flow.actions:
            changes.modify_flows.append(flow)
    return changes
