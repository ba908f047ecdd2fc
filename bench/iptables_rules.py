"""How many iptables rules kube-proxy (iptables mode) would write on one node for a state: the figure
users know, beside the flows and groups the lab's switches hold for the same state.

Counted from kube-proxy's iptables proxier layout (../shared/reference/kubernetes-semantics.md, 1.2),
nat and filter tables, per Service port with ``n`` ready endpoints, ``l`` of them on this node:

- no endpoints: REJECT for the clusterIP (filter KUBE-SERVICES) and the nodePort (KUBE-EXTERNAL-SERVICES),
  one more per load balancer address;
- otherwise: KUBE-SERVICES clusterIP -> KUBE-SVC (1, one more per load balancer address), KUBE-NODEPORTS
  -> KUBE-EXT (1), KUBE-SVC: masquerade off-cluster sources (1) + one statistic rule per endpoint (n),
  KUBE-SEP: hairpin masquerade + DNAT (2n); KUBE-EXT: Cluster 2 rules; Local 3, plus KUBE-SVL -> the
  local endpoints (1 + l) when there are some, else a DROP for the nodePort (and each LB address);
- a health check nodePort: an ACCEPT in filter KUBE-NODEPORTS.

Plus the fixed chains every node has (hooks, KUBE-POSTROUTING, KUBE-MARK-MASQ, KUBE-FORWARD, the
KUBE-NODEPORTS jump): ``FIXED_RULES``. Pure.
"""

from __future__ import annotations

from controllers.state import NodeInfo, ProxyState, ServicePortInfo

FIXED_RULES = 20  # nat: 3 hooks, KUBE-NODEPORTS jump, KUBE-POSTROUTING 3, MARK-MASQ; filter: 9 hooks, FORWARD 3


def service_port_rules(sp: ServicePortInfo, node: NodeInfo) -> int:
    lb = 1 if sp.service_type == "LoadBalancer" and sp.load_balancer_ip else 0
    n = len(sp.endpoints)
    health = 1 if sp.health_check_node_port else 0
    if n == 0:
        return 2 + lb + health
    rules = 1 + lb + 1 + (1 + n) + 2 * n
    if sp.policy == "Local":
        local = sum(1 for e in sp.endpoints if e.node == node.name)
        rules += 3 + (1 + local if local else 1 + lb)
    else:
        rules += 2
    return rules + health


def node_rules(state: ProxyState, node: NodeInfo) -> int:
    return FIXED_RULES + sum(service_port_rules(sp, node) for sp in state.service_ports)
