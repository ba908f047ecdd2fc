"""Every name, address and port number the lab uses, from one rule each.

The emulated cluster looks like a small bare-metal cluster with a routed pod network (flannel host-gw
style), so that the source address a pod sees is unmistakably the client's, a node's, or a node's pod
gateway::

    client 203.0.113.10 ─┐  edge router (203.0.113.1 | 172.18.0.1), modelled in the underlay bridge
                         │
    underlay 172.18.0.0/24 (one L2 segment between the nodes)
      ├─ node 1  172.18.0.11  pods 10.244.1.0/24  gateway 10.244.1.1
      ├─ node 2  172.18.0.12  pods 10.244.2.0/24  gateway 10.244.2.1
      └─ node n  172.18.0.(10+n)

- Node ``n`` (1-based, manifest order) has node IP ``172.18.0.(10+n)``, pod CIDR ``10.244.n.0/24`` and pod
  gateway ``10.244.n.1``. Pods get ``10.244.n.2`` upwards in the order they are placed on the node.
- Every MAC is derived from the IPv4 address it belongs to: ``02:00:`` followed by the four address bytes
  (10.244.1.2 -> 02:00:0a:f4:01:02), so a packet capture can be read without a table.
- Open vSwitch bridges and the root-namespace ends of veth pairs are named ``npl-<tag>-<what>``: the
  run's tag, then what the name attaches (``ul`` the underlay, ``n3`` node 3's bridge, ``n3-up`` /
  ``ul-n3`` its uplink's two ends, ``n3-h`` its host port, ``p12`` the 12th pod, ``ul-c`` the client,
  ``ul-lb`` the load balancer), e.g. ``npl-4kz-n1``. The tag is three base-36 characters, the first a
  digit (so no name of the untagged scheme, ``npl-n1``, parses as tagged), chosen per run when its run
  directory is made (``lab.emulation.resources.RunDir``) among the tags no bridge, interface or run
  record already uses: two runs never share a name, so neither's leftovers can be taken for the
  other's. Names fit Linux's IFNAMSIZ (15 characters): ``npl-4kz-n200-up`` is the longest. The
  interface inside every host is ``eth0``, as in a real pod, and Mininet hosts are named after the
  Kubernetes objects, untagged. The lab records every name it creates and removes exactly those.
- OpenFlow port numbers are fixed: on a node bridge the uplink is 1, the node's own host port 2, a pod
  ``100 + last octet of its IP``; on the underlay bridge the client is 1, the load balancer's health
  checker (host ``lb``, 203.0.113.2) 2, and node ``n`` is ``100 + n``.
- Across zones (nodes in two or more zones, ``topology.kubernetes.io/zone``): zone ``z`` (1-based, in order of
  first appearance among the nodes) has its own bridge ``npl-z<z>``, where its nodes attach (node ``n`` on
  port ``100 + n``), and one link up to the underlay bridge, port 1 on the zone's side and ``1000 + z``
  on the underlay's, which stays the core (edge router, load balancer). ``topologies.zones``.
- Services get their clusterIP from 10.96.0.0/12 (kubeadm's ``--service-cluster-ip-range``), chosen by
  ``lab.kube.cluster_ips`` (the manifest's own, or a deterministic one).
- LoadBalancer Services get external addresses from 198.51.100.0/24 in manifest order, starting at
  198.51.100.10 (the cloud's address pool; reported as ``status.loadBalancer.ingress``).
"""

from __future__ import annotations

import functools
import ipaddress
import random
import re

PREFIX = "npl-"
IFNAMSIZ = 16  # Linux's, with the terminating NUL: an interface or bridge name has at most 15 characters
BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
TAG_LENGTH = 3
TAG_RE = re.compile(rf"{PREFIX}([0-9][0-9a-z]{{{TAG_LENGTH - 1}}})-")
MAX_POD_SERIAL = 999_999  # npl-<tag>-p999999 is 15 characters
# The tag of the run this process is making (set by lab.emulation.resources.RunDir.create); the name
# functions below use it unless given a tag.
run_tag: str | None = None

UNDERLAY_CIDR = ipaddress.ip_network("172.18.0.0/24")
ROUTER_UNDERLAY_IP = "172.18.0.1"
CLUSTER_CIDR = ipaddress.ip_network("10.244.0.0/16")
CLIENT_CIDR = ipaddress.ip_network("203.0.113.0/24")
ROUTER_CLIENT_IP = "203.0.113.1"
CLIENT_IP = "203.0.113.10"
CLIENT_NAME = "client"
# The outside client's source ports. Its kernel picks from the ephemeral range, set wider than Linux's
# default (32768-60999) as a load generator is tuned: Open vSwitch 3.1's userspace conntrack loses many
# SYNs that reuse a 5-tuple whose closed entry it still holds (about 30 s; Linux's conntrack reopens
# such an entry). At 4,000 connections/s one lab met that after about 50,000 connections with the
# default range (SYN retransmits, then timeouts that were the lab's, not the cluster's), and after
# about 110,000 with this one. Below it, ports that only ``lab.measure.held`` binds, one batch after
# another, which the kernel never hands out by itself.
CLIENT_EPHEMERAL_PORTS = (10_001, 65_535)
CLIENT_HELD_PORTS = (1_024, 10_000)
LB_NAME = "lb"  # the cloud load balancer's health checker, outside the cluster beside the client
LB_HOST_IP = "203.0.113.2"
LB_POOL = ipaddress.ip_network("198.51.100.0/24")  # external addresses of LoadBalancer Services
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")  # --service-cluster-ip-range, kubeadm's default

MAX_NODES = 200
MAX_PODS_PER_NODE = 250

NODE_UPLINK_PORT = 1
NODE_HOST_PORT = 2
POD_PORT_BASE = 100
UNDERLAY_CLIENT_PORT = 1
UNDERLAY_LB_PORT = 2
UNDERLAY_NODE_PORT_BASE = 100
UNDERLAY_ZONE_PORT_BASE = 1000
ZONE_UPLINK_PORT = 1

_DPID_NODE_BASE = 0x4E50_0000_0000_0000  # "NP"
_DPID_UNDERLAY = 0x4E50_0001_0000_0000
_DPID_ZONE_BASE = 0x4E50_0002_0000_0000


@functools.lru_cache(maxsize=1 << 16)
def mac_for(ip: str) -> str:
    """A locally administered MAC derived from an IPv4 address (cached: every published state asks it for
    every pod, and parsing the address was a third of a pod change's state build)."""
    octets = ipaddress.IPv4Address(ip).packed
    return "02:00:" + ":".join(f"{b:02x}" for b in octets)


def node_ip(index: int) -> str:
    _check_node_index(index)
    return str(UNDERLAY_CIDR.network_address + 10 + index)


def pod_cidr(index: int) -> str:
    _check_node_index(index)
    return f"10.244.{index}.0/24"


def pod_gateway_ip(index: int) -> str:
    _check_node_index(index)
    return f"10.244.{index}.1"


def pod_ip(node_index: int, host_number: int) -> str:
    """The address of the ``host_number``-th address on a node (2 is the first pod)."""
    if not 2 <= host_number < 2 + MAX_PODS_PER_NODE:
        raise ValueError(f"a node holds at most {MAX_PODS_PER_NODE} pods")
    return f"10.244.{node_index}.{host_number}"


def pod_ofport(ip: str) -> int:
    return POD_PORT_BASE + int(ip.rsplit(".", 1)[1])


def node_dpid(index: int) -> int:
    _check_node_index(index)
    return _DPID_NODE_BASE + index


def underlay_dpid() -> int:
    return _DPID_UNDERLAY


def dpid_hex(dpid: int) -> str:
    return f"{dpid:016x}"


def set_run_tag(tag: str) -> None:
    """Make ``tag`` the tag of every name this process makes from now on (one run at a time)."""
    global run_tag
    if not is_tag(tag):
        raise ValueError(f"{tag!r} is not a run tag ({TAG_LENGTH} base-36 characters, the first a digit)")
    run_tag = tag


def is_tag(tag: str) -> bool:
    return TAG_RE.fullmatch(f"{PREFIX}{tag}-") is not None


def tag_of(name: str) -> str | None:
    """The run tag in a name the lab made (``npl-4kz-n1`` -> ``4kz``), or None for any other name."""
    match = TAG_RE.match(name)
    return match.group(1) if match and len(name) > match.end() else None


def choose_tag(taken: set[str], rng: random.Random | None = None) -> str:
    """A tag no one uses, at random (so that a tag is rarely reused even once it is free again)."""
    free = sorted(t for t in _all_tags() if t not in taken)
    if not free:
        raise ValueError("every run tag is in use: run python -m lab clean")
    return (rng or random.SystemRandom()).choice(free)


def _all_tags() -> list[str]:
    return [a + b + c for a in BASE36[:10] for b in BASE36 for c in BASE36]


def prefix(tag: str | None = None) -> str:
    """``npl-<tag>-``: how every bridge and root-namespace interface of the run is named."""
    tag = run_tag if tag is None else tag
    if tag is None:
        raise RuntimeError("no run tag: bridge and interface names are made by a run (RunDir.create)")
    return f"{PREFIX}{tag}-"


def _name(rest: str, tag: str | None) -> str:
    name = prefix(tag) + rest
    if len(name) >= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} is longer than {IFNAMSIZ - 1} characters")
    return name


def node_bridge(index: int, tag: str | None = None) -> str:
    return _name(f"n{index}", tag)


def underlay_bridge(tag: str | None = None) -> str:
    return _name("ul", tag)


def zone_bridge(index: int, tag: str | None = None) -> str:
    """The switch of the ``index``-th zone (1-based): its nodes' links meet there."""
    _check_node_index(index)  # a zone holds at least one node
    return _name(f"z{index}", tag)


def zone_dpid(index: int) -> int:
    _check_node_index(index)
    return _DPID_ZONE_BASE + index


def zone_uplink_intf(index: int, tag: str | None = None) -> tuple[str, str]:
    """(zone-bridge side, underlay side) of the inter-zone link between zone ``index`` and the core."""
    return _name(f"z{index}-up", tag), _name(f"ul-z{index}", tag)


def underlay_zone_port(index: int) -> int:
    return UNDERLAY_ZONE_PORT_BASE + index


def node_uplink_intf(index: int, tag: str | None = None) -> tuple[str, str]:
    """(node-bridge side, underlay side) of the link between node ``index`` and the underlay."""
    return _name(f"n{index}-up", tag), _name(f"ul-n{index}", tag)


def node_host_intf(index: int, tag: str | None = None) -> str:
    """Bridge side of the link to the node's own network namespace (kubelet, kube-proxy's health port)."""
    return _name(f"n{index}-h", tag)


def pod_intf(serial: int, tag: str | None = None) -> str:
    """Bridge side of a pod's link; ``serial`` counts pods in the order the lab created them."""
    if not 0 <= serial <= MAX_POD_SERIAL:
        raise ValueError(f"a run creates at most {MAX_POD_SERIAL} pods")
    return _name(f"p{serial}", tag)


def client_intf(tag: str | None = None) -> str:
    return _name("ul-c", tag)


def lb_intf(tag: str | None = None) -> str:
    return _name("ul-lb", tag)


def load_balancer_ip(index: int) -> str:
    """The external address of the ``index``-th LoadBalancer Service (0-based, manifest order)."""
    if not 0 <= index < 200:
        raise ValueError("at most 200 LoadBalancer Services")
    return str(LB_POOL.network_address + 10 + index)


def underlay_node_port(index: int) -> int:
    return UNDERLAY_NODE_PORT_BASE + index


def _check_node_index(index: int) -> None:
    if not 1 <= index <= MAX_NODES:
        raise ValueError(f"node index {index} outside 1..{MAX_NODES}")
