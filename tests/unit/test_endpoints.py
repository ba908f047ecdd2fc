"""lab.kube.endpoints: selector matching, targetPort resolution, and the ports the lab serves in each pod."""

from __future__ import annotations

from lab.kube.endpoints import endpoints, selects, workload_ports
from lab.kube.model import Cluster, ContainerPort, Endpoint, Node, Pod, Service, ServicePort

HTTP = ContainerPort(8080, "http")


def cluster_with(*pods: Pod, services: tuple[Service, ...] = ()) -> Cluster:
    return Cluster(nodes=[Node("node-a", 1), Node("node-b", 2)], pods=list(pods), services=list(services))


def web_pod(name: str, serial: int, node: str = "node-a", ports=(HTTP,), **kwargs) -> Pod:
    ip = f"10.244.{1 if node == 'node-a' else 2}.{serial + 1}"
    return Pod(name=name, node=node, labels={"app": "web"}, ports=ports, ip=ip, serial=serial, **kwargs)


def web_service(target: int | str = 8080, **kwargs) -> Service:
    return Service(name="web", ports=[ServicePort(80, 30007, target)], selector={"app": "web"}, **kwargs)


def test_selects():
    assert selects({"app": "web"}, {"app": "web", "tier": "fe"})
    assert not selects({"app": "web", "tier": "be"}, {"app": "web", "tier": "fe"})
    assert not selects({}, {"app": "web"})  # a selector-less Service selects nothing


def test_numeric_target_port_sorted_by_serial():
    svc = web_service()
    cluster = cluster_with(web_pod("b", 2, "node-b"), web_pod("a", 1), services=(svc,))
    assert endpoints(cluster, svc, svc.ports[0]) == [
        Endpoint("a", "node-a", "10.244.1.2", 8080),
        Endpoint("b", "node-b", "10.244.2.3", 8080),
    ]


def test_named_target_port_resolves_per_pod_and_skips_pods_without_it():
    svc = web_service("http")
    cluster = cluster_with(
        web_pod("a", 1),
        web_pod("b", 2, ports=(ContainerPort(9090, "http"),)),
        web_pod("c", 3, ports=(ContainerPort(9090, "metrics"),)),
        web_pod("d", 4, ports=(ContainerPort(7070, "http", "UDP"),)),  # protocol must match too
        services=(svc,),
    )
    assert [(e.pod, e.port) for e in endpoints(cluster, svc, svc.ports[0])] == [("a", 8080), ("b", 9090)]


def test_only_the_services_namespace_and_placed_pods():
    svc = web_service()
    cluster = cluster_with(
        web_pod("a", 1),
        web_pod("other-ns", 2, namespace="team"),
        Pod(name="unplaced", node="node-a", labels={"app": "web"}, serial=3),
        services=(svc,),
    )
    assert [e.pod for e in endpoints(cluster, svc, svc.ports[0])] == ["a"]


def test_empty_selector_has_no_endpoints():
    svc = Service(name="manual", ports=[ServicePort(80, 30008, 8080)])
    assert endpoints(cluster_with(web_pod("a", 1)), svc, svc.ports[0]) == []


def test_workload_ports_are_container_ports_plus_numeric_target_ports():
    pod = web_pod("a", 1, ports=(HTTP, ContainerPort(5353, "dns", "UDP")))
    services = (
        web_service(9000),
        Service(name="named", ports=[ServicePort(80, 30009, "http")], selector={"app": "web"}),
        Service(name="other", ports=[ServicePort(80, 30010, 7000)], selector={"app": "db"}),
    )
    assert workload_ports(cluster_with(pod, services=services), pod) == [8080, 9000]


def test_publish_not_ready_addresses_makes_every_endpoint_ready_and_keeps_serving_true_to_the_pod():
    """The EndpointSlice controller's podToEndpoint: ready = publishNotReadyAddresses || (serving && !terminating)."""
    pods = (web_pod("up", 1), web_pod("starting", 2, ready=False), web_pod("leaving", 3, terminating=True))
    plain, published = web_service(), web_service(publish_not_ready=True)
    conditions = lambda svc: [(e.pod, e.ready, e.serving, e.terminating)  # noqa: E731
                              for e in endpoints(cluster_with(*pods, services=(svc,)), svc, svc.ports[0])]
    assert conditions(plain) == [("up", True, True, False), ("starting", False, False, False),
                                 ("leaving", False, True, True)]
    assert conditions(published) == [("up", True, True, False), ("starting", True, False, False),
                                     ("leaving", True, True, True)]
