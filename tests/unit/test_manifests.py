"""lab.kube.manifests: YAML in, a scheduled and allocated Cluster out, or one line that says what to fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab.errors import ManifestError
from lab.kube import addressing
from lab.kube.endpoints import endpoints
from lab.kube.manifests import load_manifests, pod_template_hash, replica_pod_name
from lab.kube.model import Cluster, ContainerPort
from lab.kube.scheduler import kubelet_labels

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "cluster.yaml"
SAFE = "[bcdfghjklmnpqrstvwxz2456789]"

NODES = """
apiVersion: v1
kind: Node
metadata: {name: node-a}
---
apiVersion: v1
kind: Node
metadata: {name: node-b, labels: {zone: east}}
---
apiVersion: v1
kind: Node
metadata: {name: node-c}
"""


def deployment(name: str = "web", replicas: int = 1, spec: str = "", labels: str = "app: web") -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{{labels}}}}}
  template:
    metadata: {{labels: {{{labels}}}}}
    spec:
      {spec}
      containers:
        - name: app
          image: nginx
          ports: [{{containerPort: 8080, name: http}}]
"""


def pod(name: str = "solo", spec: str = "", labels: str = "app: web", ports: str = "") -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{{labels}}}}}
spec:
  {spec}
  containers:
    - name: app
      image: nginx
      ports: [{ports or "{containerPort: 8080, name: http}"}]
"""


def service(name: str = "web", ports: str = "[{port: 80, targetPort: 8080}]", extra: str = "") -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: {ports}
  {extra}
"""


def load(tmp_path: Path, *docs: str, nodes: str = NODES, **kwargs) -> Cluster:
    path = tmp_path / "m.yaml"
    path.write_text("\n---\n".join([nodes, *docs]))
    return load_manifests([str(path)], **kwargs)


def error(tmp_path: Path, *docs: str, nodes: str = NODES) -> str:
    with pytest.raises(ManifestError) as caught:
        load(tmp_path, *docs, nodes=nodes)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- happy path ----------------------------------------------------------------------------------


def test_fixture_builds_the_whole_cluster():
    cluster = load_manifests([str(FIXTURE)])

    assert [(n.name, n.index) for n in cluster.nodes] == [("node-a", 1), ("node-b", 2), ("node-c", 3)]
    assert cluster.node("node-a").labels == {"disktype": "ssd", **kubelet_labels("node-a")}
    debug = cluster.pod("debug")
    assert (debug.node, debug.ip, debug.serial, debug.owner) == ("node-b", "10.244.2.2", 1, None)
    replicas = [p for p in cluster.pods if p.owner == "web"]
    assert [p.node for p in replicas] == ["node-a", "node-c", "node-a"]  # ssd nodes only, spread
    assert [p.ip for p in replicas] == ["10.244.1.2", "10.244.3.2", "10.244.1.3"]
    assert [p.serial for p in replicas] == [2, 3, 4]
    assert replicas[0].labels["tier"] == "frontend"

    web = cluster.service("web")
    assert (web.type, web.external_traffic_policy) == ("LoadBalancer", "Local")
    http, metrics = web.ports
    assert (http.name, http.port, http.node_port, http.target_port) == ("http", 80, 30080, "http")
    assert metrics.target_port == 9100  # defaults to port
    assert 30086 <= metrics.node_port <= 32767
    assert web.health_check_node_port is not None
    assert 30086 <= web.health_check_node_port <= 32767
    assert web.health_check_node_port != metrics.node_port

    assert cluster.warnings == ["ignored 1 object the lab does not model: 1 ConfigMap (listed in the JSON report)"]
    assert cluster.ignored == [{"kind": "ConfigMap", "apiVersion": "v1", "name": "settings", "namespace": None,
                                "source": str(FIXTURE)}]
    internal = cluster.service("web-internal")  # ClusterIP: in the model, with no nodePort
    assert internal.type == "ClusterIP" and [p.node_port for p in internal.ports] == [None]
    assert internal.node_ports == []


def test_named_target_port_resolves_per_pod():
    cluster = load_manifests([str(FIXTURE)])
    web = cluster.service("web")
    found = {(e.pod, e.port) for e in endpoints(cluster, web, web.ports[0])}
    assert ("debug", 9090) in found
    assert {port for name, port in found if name != "debug"} == {8080}


def test_seed_example_places_two_replicas_on_node_a_and_node_b():
    cluster = load_manifests([str(REPO / "examples" / "seed")])

    assert [n.name for n in cluster.nodes] == ["node-a", "node-b", "node-c"]
    assert [p.node for p in cluster.pods] == ["node-a", "node-b"]
    assert cluster.pods_on("node-c") == []
    assert all(
        p.owner == "my-app" and re.fullmatch(rf"my-app-{SAFE}{{10}}-{SAFE}{{5}}", p.name)
        for p in cluster.pods
    )
    svc = cluster.service("my-app-service")
    assert (svc.type, svc.external_traffic_policy) == ("NodePort", "Cluster")
    assert [(sp.port, sp.target_port, sp.node_port) for sp in svc.ports] == [(80, 8080, 30007)]
    assert [(e.node, e.port) for e in endpoints(cluster, svc, svc.ports[0])] == [
        ("node-a", 8080),
        ("node-b", 8080),
    ]
    assert cluster.warnings == []


def test_replica_names_are_deterministic_and_shaped_like_kubernetes(tmp_path):
    first = load(tmp_path, deployment(replicas=3))
    second = load(tmp_path, deployment(replicas=3))
    names = [p.name for p in first.pods]

    assert names == [p.name for p in second.pods]
    assert len(set(names)) == 3
    template_hash = pod_template_hash("default", "web")
    for name in names:
        assert re.fullmatch(rf"web-{template_hash}-{SAFE}{{5}}", name)
    assert all(p.labels["pod-template-hash"] == template_hash for p in first.pods)
    assert pod_template_hash("default", "api") != template_hash
    assert pod_template_hash("other", "web") != template_hash


def test_long_deployment_names_are_cut_like_generate_name():
    name = replica_pod_name("default", "a" * 70, 0)
    assert len(name) == 63
    assert name.startswith("a" * 58)


def test_replicas_spread_least_loaded_first_in_node_order(tmp_path):
    cluster = load(tmp_path, deployment(replicas=4))
    assert [p.node for p in cluster.pods] == ["node-a", "node-b", "node-c", "node-a"]
    assert [len(cluster.pods_on(n)) for n in ("node-a", "node-b", "node-c")] == [2, 1, 1]
    assert [p.ip for p in cluster.pods_on("node-a")] == ["10.244.1.2", "10.244.1.3"]


def test_replicas_see_pods_placed_before_them(tmp_path):
    cluster = load(tmp_path, pod("pinned", spec="nodeName: node-a"), deployment(replicas=2))
    assert [p.node for p in cluster.pods] == ["node-a", "node-b", "node-c"]


def test_node_selector_and_hostname_label(tmp_path):
    cluster = load(
        tmp_path,
        deployment("east", replicas=2, spec="nodeSelector: {zone: east}", labels="app: east"),
        deployment("on-c", spec="nodeSelector: {kubernetes.io/hostname: node-c}", labels="app: c"),
    )
    assert [p.node for p in cluster.pods] == ["node-b", "node-b", "node-c"]


def test_bare_pod_without_node_name_is_scheduled(tmp_path):
    cluster = load(tmp_path, pod("one"), pod("two"))
    assert [(p.name, p.node) for p in cluster.pods] == [("one", "node-a"), ("two", "node-b")]


def test_zero_replicas_create_no_pods(tmp_path):
    assert load(tmp_path, deployment(replicas=0)).pods == []


def test_omitted_and_zero_node_ports_are_allocated_in_the_upper_band(tmp_path):
    ports = "[{name: a, port: 80}, {name: b, port: 81, nodePort: 0}, {name: c, port: 82, nodePort: 30001}]"
    cluster = load(tmp_path, deployment(), service(ports=ports))
    a, b, c = cluster.service("web").ports
    assert 30086 <= a.node_port <= 32767
    assert 30086 <= b.node_port <= 32767
    assert c.node_port == 30001
    assert load(tmp_path, deployment(), service(ports=ports)).service("web").ports == [a, b, c]


def test_health_check_node_port_only_for_load_balancer_local(tmp_path):
    cluster = load(
        tmp_path,
        service("nodeport-local", extra="externalTrafficPolicy: Local"),
        service("lb-local", extra="externalTrafficPolicy: Local\n  healthCheckNodePort: 30500").replace(
            "type: NodePort", "type: LoadBalancer"
        ),
        service("lb-cluster").replace("type: NodePort", "type: LoadBalancer"),
    )
    assert cluster.service("nodeport-local").health_check_node_port is None
    assert cluster.service("lb-local").health_check_node_port == 30500
    assert cluster.service("lb-cluster").health_check_node_port is None


def test_folders_read_yaml_and_yml_in_name_order(tmp_path):
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "b.yml").write_text(NODES.replace("node-", "second-"))
    (folder / "a.yaml").write_text(NODES)
    (folder / "notes.txt").write_text("not yaml: [")
    (folder / "empty.yaml").write_text("---\n")
    cluster = load_manifests([folder])
    assert [n.name for n in cluster.nodes][:4] == ["node-a", "node-b", "node-c", "second-a"]
    assert [n.index for n in cluster.nodes] == [1, 2, 3, 4, 5, 6]


def test_namespaces_keep_same_named_objects_apart(tmp_path):
    other = deployment(name="web", labels="app: other").replace("{name: web}", "{name: web, namespace: team}")
    cluster = load(tmp_path, deployment(), other)
    assert sorted(p.namespace for p in cluster.pods) == ["default", "team"]


# --- errors: files and YAML ------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ManifestError) as caught:
        load_manifests([str(tmp_path / "nope.yaml")])
    assert str(caught.value) == f"{tmp_path / 'nope.yaml'}: does not exist: check the path"


def test_folder_without_yaml(tmp_path):
    with pytest.raises(ManifestError, match=r"holds no \*\.yaml, \*\.yml or \*\.json files"):
        load_manifests([str(tmp_path)])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: v1\nkind: Node\nmetadata:\n  name: [node-a\n")
    with pytest.raises(ManifestError) as caught:
        load_manifests([str(path)])
    message = str(caught.value)
    assert message.startswith(f"{path}: line ")
    assert "YAML syntax error" in message
    assert "\n" not in message


def test_document_must_be_an_object_with_a_kind(tmp_path):
    # NODES holds documents 1-3.
    assert "document 4 is a list, not a Kubernetes object" in error(tmp_path, "- a\n- b")
    assert "document 4 has no kind" in error(tmp_path, "metadata: {name: x}")


def test_no_nodes_makes_three_with_kubelet_labels(tmp_path):
    cluster = load(tmp_path, deployment(replicas=3), nodes="")
    assert [(n.name, n.index) for n in cluster.nodes] == [("node-a", 1), ("node-b", 2), ("node-c", 3)]
    assert cluster.nodes[1].labels == {
        "kubernetes.io/hostname": "node-b", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"}
    assert sorted(p.node for p in cluster.pods) == ["node-a", "node-b", "node-c"]


def test_unknown_api_version(tmp_path):
    message = error(tmp_path, deployment().replace("apps/v1", "extensions/v1beta1"))
    assert 'Deployment "web"' in message
    assert 'apiVersion "extensions/v1beta1" does not serve Deployment: use apiVersion: apps/v1' in message
    assert "apiVersion is missing" in error(tmp_path, pod().replace("apiVersion: v1\n", ""))


# --- errors: names ------------------------------------------------------------------------------------


def test_invalid_names(tmp_path):
    message = error(tmp_path, "apiVersion: v1\nkind: Node\nmetadata: {name: Node_D}")
    assert 'Node "Node_D"' in message and 'metadata.name "Node_D" is not a DNS-1123 subdomain' in message
    assert message.endswith('rename it, e.g. "node-d"')
    assert "is not a DNS-1035 label" in error(tmp_path, service(name="1web"))
    message = error(tmp_path, pod().replace("{name: solo,", "{name: solo, namespace: Team,"))
    assert 'metadata.namespace "Team" is not a DNS-1123 label' in message


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (pod(name="client"), "is reserved for the lab's own client node"),
        (pod(name="kube-proxy"), "is reserved for the lab's own kube-proxy node"),
        ("apiVersion: v1\nkind: Node\nmetadata: {name: npl-x}", 'starts with "npl-"'),
        (deployment(name="npl-web"), 'starts with "npl-"'),
    ],
)
def test_reserved_lab_names(tmp_path, doc, needle):
    message = error(tmp_path, doc)
    assert "metadata.name" in message and needle in message


def test_duplicate_names(tmp_path):
    assert 'Node "node-a" (' in error(tmp_path, "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}")
    message = error(tmp_path, pod("solo"), pod("solo"))
    assert 'metadata.name "solo" is already used by Pod "solo"' in message
    message = error(tmp_path, pod("node-b"))
    assert 'metadata.name "node-b" is already used by Node "node-b"' in message
    assert "unique cluster-wide" in message
    assert 'already used by Deployment "web"' in error(tmp_path, deployment(), deployment())
    assert 'already used by Service "web"' in error(tmp_path, service(), service())


def test_pod_names_are_unique_across_namespaces(tmp_path):
    message = error(
        tmp_path, pod("solo"), pod("solo").replace("{name: solo,", "{name: solo, namespace: team,")
    )
    assert 'Pod "team/solo"' in message and "already used" in message


# --- errors: scheduling -------------------------------------------------------------------------------


def test_unknown_node_name(tmp_path):
    message = error(tmp_path, pod(spec="nodeName: node-z"))
    assert 'spec.nodeName "node-z" is not a Node in the manifests (Nodes: node-a, node-b, node-c)' in message


def test_node_selector_matching_no_node(tmp_path):
    message = error(tmp_path, deployment(spec="nodeSelector: {disktype: ssd}"))
    assert message.startswith('Deployment "web" (')
    assert "spec.template.spec.nodeSelector {disktype=ssd} matches no Node" in message


def test_node_selector_must_match_the_pinned_node(tmp_path):
    message = error(tmp_path, pod(spec="nodeName: node-a\n  nodeSelector: {zone: east}"))
    assert 'spec.nodeSelector {zone=east} does not match the labels of Node "node-a"' in message


def test_too_many_pods_on_one_node(tmp_path):
    one_node = "apiVersion: v1\nkind: Node\nmetadata: {name: solo-node}"
    message = error(tmp_path, deployment(replicas=addressing.MAX_PODS_PER_NODE + 1), nodes=one_node)
    assert f"already hold {addressing.MAX_PODS_PER_NODE} pods" in message
    message = error(
        tmp_path,
        deployment(replicas=addressing.MAX_PODS_PER_NODE),
        pod(spec="nodeName: solo-node"),
        nodes=one_node,
    )
    assert f'spec.nodeName "solo-node" already holds {addressing.MAX_PODS_PER_NODE} pods' in message


def test_too_many_nodes(tmp_path):
    nodes = "\n---\n".join(
        f"apiVersion: v1\nkind: Node\nmetadata: {{name: n{i}}}" for i in range(addressing.MAX_NODES + 1)
    )
    message = error(tmp_path, nodes=nodes)
    assert f'Node "n{addressing.MAX_NODES}"' in message
    assert f"at most {addressing.MAX_NODES} Nodes" in message


# --- errors: workloads -----------------------------------------------------------------------------


def test_deployment_selector_must_match_template(tmp_path):
    doc = deployment().replace("selector: {matchLabels: {app: web}}", "selector: {matchLabels: {app: api}}")
    message = error(tmp_path, doc)
    assert "spec.template.metadata.labels" in message and "do not match spec.selector.matchLabels" in message
    doc = deployment().replace("selector: {matchLabels: {app: web}}", "")
    assert "spec.selector is required" in error(tmp_path, doc)
    doc = deployment().replace("selector: {matchLabels: {app: web}}", "selector: {matchLabels: {}}")
    assert "spec.selector is empty" in error(tmp_path, doc)


def test_deployment_match_expressions(tmp_path):
    ok = "selector: {matchExpressions: [{key: app, operator: In, values: [web, api]}]}"
    assert len(load(tmp_path, deployment().replace("selector: {matchLabels: {app: web}}", ok)).pods) == 1
    bad = "selector: {matchExpressions: [{key: app, operator: NotIn, values: [web]}]}"
    message = error(tmp_path, deployment().replace("selector: {matchLabels: {app: web}}", bad))
    assert "do not match spec.selector.matchExpressions[0]" in message


def test_workload_field_errors(tmp_path):
    assert "spec.replicas -1 is negative" in error(tmp_path, deployment(replicas=-1))
    assert "spec.replicas is a string, not an integer" in error(tmp_path, deployment(replicas='"two"'))
    message = error(tmp_path, pod(ports="{containerPort: 70000}"))
    assert "spec.containers[0].ports[0].containerPort 70000 is outside 1-65535" in message
    message = error(tmp_path, pod(ports="{containerPort: 80, name: Web_Port}"))
    assert "spec.containers[0].ports[0].name" in message and "IANA_SVC_NAME" in message
    assert "spec.containers[0].image is required" in error(tmp_path, pod().replace("image: nginx", ""))
    message = error(tmp_path, pod(labels="version: 2"))
    assert 'metadata.labels[version] is an integer, not a string: quote it: version: "2"' in message


# --- errors: Services -------------------------------------------------------------------------------


def test_node_port_outside_range(tmp_path):
    message = error(tmp_path, service(ports="[{port: 80, nodePort: 40000}]"))
    assert message == (
        f'Service "web" ({tmp_path / "m.yaml"}): spec.ports[0].nodePort 40000 is outside 30000-32767: '
        "pick a port in the range or omit it to have one allocated"
    )


def test_node_port_used_twice(tmp_path):
    message = error(
        tmp_path, service("a", "[{port: 80, nodePort: 30007}]"), service("b", "[{port: 80, nodePort: 30007}]")
    )
    assert message.startswith('Service "b" (')
    assert (
        'spec.ports[0].nodePort 30007 is already allocated to Service "a" spec.ports[0].nodePort' in message
    )


def test_node_port_clashing_with_a_health_check_node_port(tmp_path):
    lb = service("lb", extra="externalTrafficPolicy: Local\n  healthCheckNodePort: 30007")
    lb = lb.replace("type: NodePort", "type: LoadBalancer")
    message = error(tmp_path, lb, service("b", "[{port: 80, nodePort: 30007}]"))
    assert 'is already allocated to Service "lb" spec.healthCheckNodePort' in message


def test_explicit_port_later_in_the_manifests_is_never_taken_dynamically(tmp_path):
    first = load(tmp_path, service("a", "[{port: 80}]"))
    taken = first.service("a").ports[0].node_port
    cluster = load(tmp_path, service("a", "[{port: 80}]"), service("b", f"[{{port: 80, nodePort: {taken}}}]"))
    assert cluster.service("b").ports[0].node_port == taken
    assert cluster.service("a").ports[0].node_port != taken


def test_service_port_errors(tmp_path):
    assert "spec.ports[0].port 0 is outside 1-65535" in error(tmp_path, service(ports="[{port: 0}]"))
    message = error(tmp_path, service(ports="[{port: 80, targetPort: 70000}]"))
    assert "spec.ports[0].targetPort 70000 is outside 1-65535" in message
    dns = load(tmp_path, service(ports="[{name: dns, port: 53, protocol: UDP}, {name: tcp, port: 53}, "
                                       "{name: s, port: 54, protocol: SCTP}]"))
    assert [(p.name, p.port, p.protocol) for p in dns.services[0].ports] == [("dns", 53, "UDP"), ("tcp", 53, "TCP")]
    assert any("spec.ports[2].protocol SCTP is not modelled (the lab forwards TCP and UDP): this port is left out"
               in w for w in dns.strict_problems)
    message = error(tmp_path, service(ports="[{port: 80}, {port: 81}]"))
    assert "spec.ports[0].name is required when a Service has more than one port" in message
    message = error(tmp_path, service(ports="[{name: a, port: 80}, {name: b, port: 80}]"))
    assert "spec.ports[1].port 80 is already used by spec.ports[0]" in message
    message = error(tmp_path, service(ports='[{port: 80, targetPort: "8080"}]'))
    assert "spec.ports[0].targetPort" in message and "write it unquoted: targetPort: 8080" in message


def test_service_type_and_policy_errors(tmp_path):
    message = error(tmp_path, service(extra="externalTrafficPolicy: Global"))
    assert 'spec.externalTrafficPolicy "Global" is not a policy: use Cluster or Local' in message
    message = error(tmp_path, service().replace("type: NodePort", "type: Nodeport"))
    assert 'spec.type "Nodeport" is not a Service type' in message
    message = error(tmp_path, service(extra="externalTrafficPolicy: Local\n  healthCheckNodePort: 30500"))
    assert "spec.healthCheckNodePort may only be set when type is LoadBalancer" in message


def test_named_target_port_no_selected_pod_declares(tmp_path):
    message = error(tmp_path, deployment(), service(ports="[{port: 80, targetPort: htttp}]"))
    assert 'spec.ports[0].targetPort "htttp" is not a port name of any selected pod' in message
    # With no pods selected there is nothing to check against (the pods may come later).
    cluster = load(tmp_path, service(ports="[{port: 80, targetPort: htttp}]"))
    assert cluster.service("web").ports[0].target_port == "htttp"


# --- examples/imbalance: the price of Local and its remedy -------------------------------------------------

IMBALANCE = REPO / "examples" / "imbalance"


def imbalance(*names: str) -> Cluster:
    return load_manifests([IMBALANCE / f"{name}.yaml" for name in names])


def per_node(cluster: Cluster) -> dict[str, int]:
    return {node.name: len(cluster.pods_on(node.name)) for node in cluster.nodes}


def local_endpoints(cluster: Cluster) -> dict[str, int]:
    """Endpoints per node of my-app-lb: under Local each node serves only these, half the traffic each."""
    svc = cluster.service("my-app-lb")
    found = endpoints(cluster, svc, svc.ports[0])
    return {node.name: sum(1 for e in found if e.node == node.name) for node in cluster.nodes}


def test_imbalance_skewed_places_three_and_one():
    cluster = imbalance("nodes", "skewed", "service")
    assert per_node(cluster) == {"node-a": 3, "node-b": 1}
    assert local_endpoints(cluster) == {"node-a": 3, "node-b": 1}
    svc = cluster.service("my-app-lb")
    assert (svc.type, svc.external_traffic_policy) == ("LoadBalancer", "Local")
    assert svc.selector == {"app": "my-app"}
    assert [(sp.port, sp.target_port) for sp in svc.ports] == [(80, 8080)]
    assert svc.health_check_node_port is not None
    assert all(p.ports == (ContainerPort(8080, "http"),) for p in cluster.pods)
    assert (cluster.warnings, cluster.pending) == ([], [])


def test_imbalance_spread_places_two_and_two():
    cluster = imbalance("nodes", "spread", "service")
    assert per_node(cluster) == {"node-a": 2, "node-b": 2}
    assert local_endpoints(cluster) == {"node-a": 2, "node-b": 2}
    assert all(p.owner == "my-app" for p in cluster.pods)
    assert (cluster.warnings, cluster.pending) == ([], [])


def test_imbalance_anti_affinity_places_one_and_one():
    cluster = imbalance("nodes", "anti-affinity", "service")
    assert per_node(cluster) == {"node-a": 1, "node-b": 1}
    assert (cluster.warnings, cluster.pending) == ([], [])


def test_imbalance_remedies_applied_on_top_of_the_skew():
    spread = imbalance("nodes", "skewed", "spread", "service")
    assert per_node(spread) == {"node-a": 4, "node-b": 4}
    assert [p.node for p in spread.pods if p.owner] == ["node-b", "node-b", "node-a", "node-b"]

    anti = imbalance("nodes", "skewed", "anti-affinity", "service")
    assert per_node(anti) == {"node-a": 3, "node-b": 1}
    names = [replica_pod_name("default", "my-app", index) for index in range(2)]
    assert anti.pending == names
    assert anti.warnings == [
        f"Pod \"{name}\" is Pending: 0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
        for name in names
    ]


# --- scheduling rules in YAML ------------------------------------------------------------------------------

HOSTNAME = "kubernetes.io/hostname"


def spread_rule(fields: str = "", key: str = HOSTNAME, when: str = "DoNotSchedule", skew: int = 1) -> str:
    return (
        f"topologySpreadConstraints: [{{maxSkew: {skew}, topologyKey: {key}, whenUnsatisfiable: {when}, "
        f"labelSelector: {{matchLabels: {{app: web}}}}{fields}}}]"
    )


def anti_rule(term: str = "labelSelector: {matchLabels: {app: web}}", key: str = HOSTNAME) -> str:
    rule = f"requiredDuringSchedulingIgnoredDuringExecution: [{{topologyKey: {key}, {term}}}]"
    return f"affinity: {{podAntiAffinity: {{{rule}}}}}"


def nodes_of(cluster: Cluster, owner: str | None = "web") -> list[str]:
    return [p.node for p in cluster.pods if p.owner == owner]


def test_scheduling_fixture_in_block_yaml():
    cluster = load_manifests([FIXTURE.with_name("scheduling.yaml")])
    assert nodes_of(cluster) == ["node-a", "node-c", "node-b", "node-c"]  # 2 per zone
    assert nodes_of(cluster, "cache") == ["node-c", "node-a"]  # one per node, near web pods
    assert cluster.pod("probe").node == "node-a"  # beside a cache, outside z2
    assert (cluster.warnings, cluster.pending) == ([], [])


def test_topology_spread_constraints_are_read(tmp_path):
    assert nodes_of(load(tmp_path, deployment(replicas=4, spec=spread_rule()))) == [
        "node-a",
        "node-b",
        "node-c",
        "node-a",
    ]
    # Only node-b has a zone label: under DoNotSchedule the others are no domain and never chosen.
    cluster = load(tmp_path, deployment(replicas=3, spec=spread_rule(key="zone")))
    assert nodes_of(cluster) == ["node-b"] * 3
    # matchExpressions work as in a Deployment selector.
    expressions = "labelSelector: {matchExpressions: [{key: app, operator: In, values: [web]}]}"
    rule = spread_rule().replace("labelSelector: {matchLabels: {app: web}}", expressions)
    pinned = [pod(f"p{i}", spec="nodeName: node-a") for i in range(2)]
    assert nodes_of(load(tmp_path, *pinned, deployment(replicas=2, spec=rule))) == ["node-b", "node-c"]


def test_topology_spread_counts_pods_of_other_owners(tmp_path):
    # Two bare web pods on node-a: a maxSkew 1 Deployment must fill node-b and node-c first.
    pinned = [pod(f"p{i}", spec="nodeName: node-a") for i in range(2)]
    cluster = load(tmp_path, *pinned, deployment(replicas=4, spec=spread_rule()))
    assert nodes_of(cluster) == ["node-b", "node-c", "node-b", "node-c"]
    # matchLabelKeys [pod-template-hash]: only this Deployment's own pods count.
    own_pods = spread_rule(", matchLabelKeys: [pod-template-hash]")
    own = load(tmp_path, *pinned, deployment(replicas=2, spec=own_pods))
    assert nodes_of(own) == ["node-b", "node-c"]  # least loaded first, then spread among its own pods
    own = load(tmp_path, *pinned, deployment(replicas=4, spec=own_pods))
    assert nodes_of(own) == ["node-b", "node-c", "node-a", "node-b"]


def test_schedule_anyway_and_min_domains_are_read(tmp_path):
    # ScheduleAnyway on zone: node-b (the only zone) is preferred but nothing is ever Pending.
    cluster = load(tmp_path, deployment(replicas=3, spec=spread_rule(key="zone", when="ScheduleAnyway")))
    assert nodes_of(cluster) == ["node-b"] * 3
    # minDomains 4 with 3 nodes: the minimum counts as 0, so no node may take a second replica.
    cluster = load(tmp_path, deployment(replicas=4, spec=spread_rule(", minDomains: 4")))
    assert nodes_of(cluster) == ["node-a", "node-b", "node-c"]
    assert cluster.pending == [replica_pod_name("default", "web", 3)]
    assert cluster.warnings[0].endswith("3 node(s) didn't match pod topology spread constraints.")


def test_replicas_kept_off_every_node_by_anti_affinity_are_pending(tmp_path):
    cluster = load(tmp_path, deployment(replicas=4, spec=anti_rule()))
    assert nodes_of(cluster) == ["node-a", "node-b", "node-c"]
    assert [p.serial for p in cluster.pods] == [1, 2, 3]
    pending = replica_pod_name("default", "web", 3)
    assert cluster.pending == [pending]
    assert cluster.warnings == [
        f'Pod "{pending}" is Pending: 0/3 nodes are available: '
        "3 node(s) didn't match pod anti-affinity rules."
    ]
    assert pending not in [p.name for p in cluster.pods]


def test_a_bare_pod_can_be_pending_too(tmp_path):
    pods = [pod(f"w{i}", spec="nodeName: node-" + n) for i, n in enumerate("abc")]
    cluster = load(tmp_path, *pods, pod("lonely", spec=anti_rule()))
    assert cluster.pending == ["lonely"]
    assert cluster.warnings[0].startswith('Pod "lonely" is Pending: 0/3 nodes are available: 3 node(s)')


def test_anti_affinity_namespaces_and_zones_are_read(tmp_path):
    team_pod = pod("t0", spec="nodeName: node-a").replace("{name: t0,", "{name: t0, namespace: team,")
    # By default a term looks in the pod's own namespace only: the team pod does not count.
    cluster = load(tmp_path, team_pod, deployment(replicas=3, spec=anti_rule()))
    assert nodes_of(cluster) == ["node-b", "node-c", "node-a"]
    listed = anti_rule("labelSelector: {matchLabels: {app: web}}, namespaces: [team, default]")
    assert nodes_of(load(tmp_path, team_pod, deployment(replicas=3, spec=listed))) == ["node-b", "node-c"]
    every = anti_rule("labelSelector: {matchLabels: {app: web}}, namespaceSelector: {}")
    assert nodes_of(load(tmp_path, team_pod, deployment(replicas=3, spec=every))) == ["node-b", "node-c"]
    # Over zone: node-a and node-c have no zone, so the term cannot keep replicas off them.
    cluster = load(tmp_path, deployment(replicas=4, spec=anti_rule(key="zone")))
    assert nodes_of(cluster) == ["node-a", "node-b", "node-c", "node-a"]


def test_existing_pods_anti_affinity_applies_to_later_pods(tmp_path):
    guard_rule = anti_rule()
    guard = deployment("guard", spec=guard_rule, labels="app: guard")
    cluster = load(tmp_path, guard, deployment(replicas=3))
    assert nodes_of(cluster, "guard") == ["node-a"]
    assert nodes_of(cluster) == ["node-b", "node-c", "node-b"]  # never beside the guard


def test_preferred_pod_affinity_and_anti_affinity_are_read(tmp_path):
    prefer_apart = (
        "affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 100, "
        f"podAffinityTerm: {{topologyKey: {HOSTNAME}, labelSelector: {{matchLabels: {{app: web}}}}}}}}]}}}}"
    )
    pinned = [pod(f"p{i}", spec="nodeName: node-a", labels="app: other") for i in range(2)]
    web = pod("w", spec="nodeName: node-b")
    cluster = load(tmp_path, web, *pinned, deployment(replicas=1, spec=prefer_apart))
    assert nodes_of(cluster) == ["node-c"]
    near_cache = (
        "affinity: {podAffinity: {requiredDuringSchedulingIgnoredDuringExecution: "
        f"[{{topologyKey: {HOSTNAME}, labelSelector: {{matchLabels: {{app: cache}}}}}}]}}}}"
    )
    cache = pod("cache", spec="nodeName: node-c", labels="app: cache")
    assert nodes_of(load(tmp_path, cache, deployment(replicas=2, spec=near_cache))) == ["node-c", "node-c"]


def test_node_affinity_is_read(tmp_path):
    required = (
        "affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: "
        "[{matchExpressions: [{key: zone, operator: In, values: [west]}]}, "
        "{matchFields: [{key: metadata.name, operator: In, values: [node-c]}]}]}}}"
    )
    assert nodes_of(load(tmp_path, deployment(replicas=2, spec=required))) == ["node-c", "node-c"]
    preferred = (
        "affinity: {nodeAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 20, "
        "preference: {matchExpressions: [{key: zone, operator: Exists}]}}]}}"
    )
    assert nodes_of(load(tmp_path, deployment(replicas=2, spec=preferred))) == ["node-b", "node-b"]
    message = error(tmp_path, deployment(spec=required.replace("node-c", "node-z")))
    assert (
        "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution "
        "matches no Node" in message
    )


def test_rules_without_a_label_selector_are_accepted_with_a_warning(tmp_path):
    rule = spread_rule().replace(", labelSelector: {matchLabels: {app: web}}", "")
    cluster = load(tmp_path, deployment(replicas=2, spec=rule), pod(spec=anti_rule("namespaces: [default]")))
    assert len(cluster.pods) == 3
    assert cluster.warnings == [
        f'Deployment "web" ({tmp_path / "m.yaml"}): spec.template.spec.topologySpreadConstraints[0] '
        "has no labelSelector, so it counts no pods and never constrains placement: "
        "add labelSelector.matchLabels with the pods' labels",
        f'Pod "solo" ({tmp_path / "m.yaml"}): spec.affinity.podAntiAffinity.'
        "requiredDuringSchedulingIgnoredDuringExecution[0] has no labelSelector, so it selects no pods: "
        "add labelSelector",
    ]


TSC = "spec.template.spec.topologySpreadConstraints[0]"
ANTI = "spec.template.spec.affinity.podAntiAffinity"
NODE_AFFINITY = "spec.template.spec.affinity.nodeAffinity"
REQUIRED_NODES = f"{NODE_AFFINITY}.requiredDuringSchedulingIgnoredDuringExecution"


def node_rule(expression: str) -> str:
    return (
        "affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: "
        f"{{nodeSelectorTerms: [{{matchExpressions: [{expression}]}}]}}}}}}"
    )


def preferred_anti(entry: str) -> str:
    return f"affinity: {{podAntiAffinity: {{preferredDuringSchedulingIgnoredDuringExecution: [{entry}]}}}}"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (spread_rule(skew=0), f"{TSC}.maxSkew 0 must be greater than zero: use maxSkew: 1 or more"),
        (spread_rule().replace("maxSkew: 1, ", ""), f"{TSC}.maxSkew is required"),
        (spread_rule().replace("maxSkew: 1", 'maxSkew: "1"'), f"{TSC}.maxSkew is a string, not an integer"),
        (
            spread_rule(when="Sometimes"),
            f'{TSC}.whenUnsatisfiable "Sometimes" is not supported: use DoNotSchedule or ScheduleAnyway',
        ),
        (
            spread_rule().replace(", whenUnsatisfiable: DoNotSchedule", ""),
            f"{TSC}.whenUnsatisfiable is required",
        ),
        (spread_rule().replace(f"topologyKey: {HOSTNAME}, ", ""), f"{TSC}.topologyKey is required"),
        (spread_rule(key='"bad key"'), f'{TSC}.topologyKey "bad key" is not a valid label key'),
        (spread_rule(", minDomains: 0"), f"{TSC}.minDomains 0 must be greater than zero"),
        (
            spread_rule(", minDomains: 2", when="ScheduleAnyway"),
            f"{TSC}.minDomains may only be set with whenUnsatisfiable DoNotSchedule, not ScheduleAnyway",
        ),
        (spread_rule(", nodeAffinityPolicy: Always"), f'{TSC}.nodeAffinityPolicy "Always" is not a policy'),
        (spread_rule(", nodeTaintsPolicy: Never"), f'{TSC}.nodeTaintsPolicy "Never" is not a policy'),
        (
            spread_rule(", matchLabelKeys: [app]"),
            f'{TSC}.matchLabelKeys[0] "app" is also in labelSelector',
        ),
        (
            spread_rule(", matchLabelKeys: [pod-template-hash]").replace(
                "labelSelector: {matchLabels: {app: web}}, ", ""
            ),
            f"{TSC}.labelSelector is required when matchLabelKeys is set",
        ),
        (
            "topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}, "
            "{maxSkew: 2, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}]",
            "spec.template.spec.topologySpreadConstraints[1] repeats topologyKey zone with "
            "whenUnsatisfiable DoNotSchedule of spec.template.spec.topologySpreadConstraints[0]",
        ),
        (
            "topologySpreadConstraints: {maxSkew: 1}",
            "spec.template.spec.topologySpreadConstraints is a mapping, not a list",
        ),
        (
            spread_rule().replace("matchLabels: {app: web}", "matchExpressions: [{key: app, operator: Eq}]"),
            f'{TSC}.labelSelector.matchExpressions[0].operator "Eq" is not an operator: '
            "use In, NotIn, Exists or DoesNotExist",
        ),
        (
            spread_rule().replace("matchLabels: {app: web}", "matchExpressions: [{key: app, operator: In}]"),
            f"{TSC}.labelSelector.matchExpressions[0].values is required for operator In",
        ),
        (
            anti_rule(key='""'),
            f"{ANTI}.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey is required",
        ),
        (
            anti_rule("labelSelector: {matchLabels: {app: web}}, namespaceSelector: {matchLabels: {t: a}}"),
            "namespaceSelector selects Namespaces by their labels, which the lab does not model",
        ),
        (
            anti_rule("labelSelector: {matchLabels: {app: web}}, matchLabelKeys: [pod-template-hash]"),
            "[0].matchLabelKeys is not modelled by the lab",
        ),
        (
            preferred_anti("{weight: 0, podAffinityTerm: {topologyKey: zone}}"),
            f"{ANTI}.preferredDuringSchedulingIgnoredDuringExecution[0].weight 0 is outside 1-100",
        ),
        (
            preferred_anti("{weight: 10}"),
            f"{ANTI}.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm is required",
        ),
        (
            "affinity: {podAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {topologyKey: zone}}}",
            "spec.template.spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution "
            "is a mapping, not a list",
        ),
        (
            node_rule("{key: zone, operator: Gte, values: [a]}"),
            f'{REQUIRED_NODES}.nodeSelectorTerms[0].matchExpressions[0].operator "Gte" is not an operator: '
            "use In, NotIn, Exists, DoesNotExist, Gt or Lt",
        ),
        (
            node_rule("{key: cores, operator: Gt, values: [many]}"),
            "matchExpressions[0].values must be a single integer for operator Gt",
        ),
        (node_rule("{key: zone, operator: Exists, values: [a]}"), "must be empty for operator Exists"),
        (
            node_rule("{key: zone, operator: In, values: [1]}"),
            'values[0] is an integer, not a string: quote it: "1"',
        ),
        (node_rule("{operator: Exists}"), "matchExpressions[0].key is required"),
        (
            "affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {}}}",
            f"{REQUIRED_NODES}.nodeSelectorTerms is required",
        ),
        (
            "affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: "
            "[{matchFields: [{key: metadata.labels, operator: In, values: [a]}]}]}}}",
            '.matchFields[0].key "metadata.labels" is not a Node field selector: use metadata.name',
        ),
        (
            "affinity: {nodeAffinity: {preferredDuringSchedulingIgnoredDuringExecution: "
            "[{weight: 101, preference: {}}]}}",
            f"{NODE_AFFINITY}.preferredDuringSchedulingIgnoredDuringExecution[0].weight 101 is outside 1-100",
        ),
    ],
)
def test_scheduling_rule_errors(tmp_path, spec, needle):
    message = error(tmp_path, deployment(spec=spec))
    assert message.startswith('Deployment "web" (')
    assert needle in message


def test_bare_pod_rule_errors_name_spec(tmp_path):
    message = error(tmp_path, pod(spec=spread_rule(skew=0)))
    assert message.startswith('Pod "solo" (')
    assert "spec.topologySpreadConstraints[0].maxSkew 0 must be greater than zero" in message
