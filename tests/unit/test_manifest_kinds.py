"""Every kind of a real manifest set: made nodes, workload controllers, HPA, List, exports, ignored kinds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab.errors import ManifestError
from lab.kube.endpoints import endpoints
from lab.kube.manifests import default_node_name, load_manifests
from lab.kube.model import Cluster, Taint

SAFE = "[bcdfghjklmnpqrstvwxz2456789]"


def load(tmp_path: Path, *docs: str, **kwargs) -> Cluster:
    path = tmp_path / "m.yaml"
    path.write_text("\n---\n".join(docs))
    return load_manifests([str(path)], **kwargs)


def error(tmp_path: Path, *docs: str, **kwargs) -> str:
    with pytest.raises(ManifestError) as caught:
        load(tmp_path, *docs, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def workload(kind: str, name: str = "web", replicas: int | None = 2, api: str = "apps/v1", spec: str = "",
             labels: str = "app: web", selector: str | None = None) -> str:
    replicas_line = f"  replicas: {replicas}\n" if replicas is not None else ""
    selector = f"  selector: {{matchLabels: {{{labels}}}}}\n" if selector is None else selector
    return f"""
apiVersion: {api}
kind: {kind}
metadata: {{name: {name}}}
spec:
{replicas_line}{selector}  template:
    metadata: {{labels: {{{labels}}}}}
    spec:
{spec}      containers: [{{name: app, image: nginx, ports: [{{containerPort: 8080, name: http}}]}}]
"""


def node(name: str, extra: str = "", labels: str = "") -> str:
    return f"apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n{extra}"


SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


# --- nodes -----------------------------------------------------------------------------------------------


def test_made_nodes_are_named_deterministically():
    assert [default_node_name(i) for i in (1, 2, 3, 26, 27, 28, 52, 53)] == [
        "node-a", "node-b", "node-c", "node-z", "node-aa", "node-ab", "node-az", "node-ba"]


def test_nodes_option_makes_that_many(tmp_path):
    cluster = load(tmp_path, workload("Deployment", replicas=5), nodes=5)
    assert cluster.nodes_made
    assert [n.name for n in cluster.nodes] == ["node-a", "node-b", "node-c", "node-d", "node-e"]
    assert sorted({p.node for p in cluster.pods}) == [n.name for n in cluster.nodes]
    assert "--nodes: asks for 0 nodes: use 1 to 200" in error(tmp_path, workload("Deployment"), nodes=0)


def test_given_nodes_are_used_as_they_are(tmp_path):
    cluster = load(tmp_path, node("big", labels="kubernetes.io/arch: arm64"),
                   workload("Deployment"))
    assert not cluster.nodes_made
    assert [n.name for n in cluster.nodes] == ["big"]
    assert cluster.nodes[0].labels["kubernetes.io/arch"] == "arm64"  # the Node's own label wins
    assert cluster.nodes[0].labels["kubernetes.io/os"] == "linux"
    message = error(tmp_path, node("big"), workload("Deployment"), nodes=3)
    assert "--nodes: asks for 3 nodes, but the manifests define 1 Node objects" in message


@pytest.mark.parametrize("key", ["kubernetes.io/os", "beta.kubernetes.io/os"])
def test_helm_os_selector_matches_made_nodes(tmp_path, key):
    """Both labels kubelet still sets; older charts and demos (sock-shop) select on the deprecated one."""
    spec = f"      nodeSelector: {{{key}: linux}}\n"
    cluster = load(tmp_path, workload("Deployment", replicas=3, spec=spec))
    assert len(cluster.pods) == 3 and not cluster.pending


# --- taints and tolerations ----------------------------------------------------------------------------

TAINTED = [
    node("node-a", "spec: {taints: [{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}]}"),
    node("node-b"),
    node("node-c", "spec: {unschedulable: true}"),
]


def test_taints_read_and_honoured(tmp_path):
    cluster = load(tmp_path, *TAINTED, workload("Deployment", replicas=3))
    assert cluster.node("node-a").taints == (Taint("node-role.kubernetes.io/control-plane", "", "NoSchedule"),)
    assert cluster.node("node-c").taints == (Taint("node.kubernetes.io/unschedulable", "", "NoSchedule"),)
    assert [p.node for p in cluster.pods] == ["node-b", "node-b", "node-b"]


def test_tolerating_pods_may_use_tainted_nodes(tmp_path):
    spec = ("      tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, "
            "effect: NoSchedule}]\n")
    cluster = load(tmp_path, *TAINTED, workload("Deployment", replicas=4, spec=spec))
    assert sorted(p.node for p in cluster.pods) == ["node-a", "node-a", "node-b", "node-b"]


def test_every_node_tainted_leaves_pods_pending(tmp_path):
    cluster = load(tmp_path, TAINTED[0], workload("Deployment", replicas=1))
    assert cluster.pods == [] and len(cluster.pending) == 1
    assert "0/1 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }" \
        in cluster.warnings[-1]


@pytest.mark.parametrize(("toleration", "problem"), [
    ("{key: a, operator: Maybe}", '"Maybe" is not an operator'),
    ("{key: a, operator: Exists, value: x}", "value must be empty when operator is Exists"),
    ("{operator: Equal, value: x}", "operator must be Exists when key is empty"),
    ("{key: a, effect: Sometimes}", '"Sometimes" is not a taint effect'),
    ("{key: a, effect: NoSchedule, tolerationSeconds: 5}", "tolerationSeconds may only be set with effect NoExecute"),
])
def test_toleration_errors(tmp_path, toleration, problem):
    message = error(tmp_path, workload("Deployment", spec=f"      tolerations: [{toleration}]\n"))
    assert "spec.template.spec.tolerations[0]" in message and problem in message


def test_taint_errors(tmp_path):
    assert '"Later" is not a taint effect' in error(tmp_path, node("a", "spec: {taints: [{key: x, effect: Later}]}"))
    assert "spec.taints[0].key is required" in error(tmp_path, node("a", "spec: {taints: [{effect: NoSchedule}]}"))


# --- workload kinds ------------------------------------------------------------------------------------


def test_replicaset_and_replication_controller_name_pods_like_their_controllers(tmp_path):
    rc = workload("ReplicationController", "legacy", 2, api="v1", labels="app: legacy", selector="")
    cluster = load(tmp_path, workload("ReplicaSet", "web-rs", 3), rc)
    rs_pods = [p for p in cluster.pods if p.owner_kind == "ReplicaSet"]
    rc_pods = [p for p in cluster.pods if p.owner_kind == "ReplicationController"]
    assert len(rs_pods) == 3 and all(re.fullmatch(rf"web-rs-{SAFE}{{5}}", p.name) for p in rs_pods)
    assert len(rc_pods) == 2 and all(re.fullmatch(rf"legacy-{SAFE}{{5}}", p.name) for p in rc_pods)
    assert [p.owner for p in rc_pods] == ["legacy", "legacy"]
    again = load(tmp_path, workload("ReplicaSet", "web-rs", 3), rc)
    assert [p.name for p in again.pods] == [p.name for p in cluster.pods]  # deterministic


def test_replication_controller_selector_must_match(tmp_path):
    rc = workload("ReplicationController", "legacy", 1, api="v1", labels="app: legacy",
                  selector="  selector: {app: x}\n")
    assert "do not match spec.selector {app=x}" in error(tmp_path, rc)


def test_statefulset_pods_are_numbered_and_labelled(tmp_path):
    cluster = load(tmp_path, workload("StatefulSet", "db", 3, labels="app: db"))
    assert [p.name for p in cluster.pods] == ["db-0", "db-1", "db-2"]
    assert cluster.pods[1].labels == {"app": "db", "statefulset.kubernetes.io/pod-name": "db-1",
                                      "apps.kubernetes.io/pod-index": "1"}
    assert sorted(p.node for p in cluster.pods) == ["node-a", "node-b", "node-c"]


def test_headless_service_of_a_statefulset_selects_its_pods(tmp_path):
    headless = """
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 5432, targetPort: 8080}]
"""
    cluster = load(tmp_path, workload("StatefulSet", "db", 2, labels="app: db"), headless)
    service = cluster.service("db")
    assert (service.type, service.cluster_ip, service.node_ports) == ("ClusterIP", "None", [])
    assert [e.pod for e in endpoints(cluster, service, service.ports[0])] == ["db-0", "db-1"]


def test_daemonset_runs_one_pod_per_eligible_node(tmp_path):
    nodes = [node("node-a"), node("node-b", labels="disk: ssd"),
             node("node-c", "spec: {unschedulable: true}"),
             node("node-d", "spec: {taints: [{key: dedicated, value: db, effect: NoExecute}]}")]
    cluster = load(tmp_path, *nodes, workload("DaemonSet", "agent", None, labels="app: agent"))
    pods = {p.node: p for p in cluster.pods}
    # node-c is cordoned, but DaemonSet pods tolerate node.kubernetes.io/unschedulable; node-d is not tolerated
    assert sorted(pods) == ["node-a", "node-b", "node-c"]
    assert all(re.fullmatch(rf"agent-{SAFE}{{5}}", p.name) for p in pods.values())
    selective = workload("DaemonSet", "ssd", None, labels="app: ssd", spec="      nodeSelector: {disk: ssd}\n")
    assert [p.node for p in load(tmp_path, *nodes, selective).pods] == ["node-b"]


def test_daemonset_on_made_nodes(tmp_path):
    cluster = load(tmp_path, workload("DaemonSet", "agent", None, labels="app: agent"), nodes=4)
    assert [p.node for p in cluster.pods] == ["node-a", "node-b", "node-c", "node-d"]


def test_hpa_keeps_its_target_within_bounds(tmp_path):
    hpa = """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 4
  maxReplicas: 10
"""
    cluster = load(tmp_path, workload("Deployment", replicas=2), hpa)
    assert len(cluster.pods) == 4
    assert sum("no load metrics" in w for w in cluster.warnings) == 1
    capped = load(tmp_path, workload("Deployment", replicas=20), hpa)
    assert len(capped.pods) == 10
    stray = hpa.replace("name: web}\n  minReplicas", "name: gone}\n  minReplicas")
    warned = load(tmp_path, workload("Deployment", replicas=2), stray)
    assert len(warned.pods) == 2
    assert any("Deployment/gone, which is not in these manifests" in w for w in warned.warnings)


def test_jobs_warn_once_and_make_no_pods(tmp_path):
    job = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate}\nspec: {}\n"
    cron = "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: backup}\nspec: {}\n"
    cluster = load(tmp_path, job, cron, workload("Deployment", replicas=1))
    assert len(cluster.pods) == 1
    job_warnings = [w for w in cluster.warnings if "Job/CronJob" in w]
    assert job_warnings == ["2 Job/CronJob objects (Job/migrate, CronJob/backup): their pods run to completion and "
                            "serve nothing, so the lab makes no pods for them"]
    assert job_warnings == cluster.strict_problems


# --- lists, namespaces, exports, ignored kinds ---------------------------------------------------------


def test_kind_list_and_namespaces(tmp_path):
    listed = """
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: shop, labels: {team: a}}}
- apiVersion: v1
  kind: Pod
  metadata: {name: one, namespace: shop, labels: {app: one}}
  spec: {containers: [{name: c, image: nginx}]}
"""
    cluster = load(tmp_path, listed)
    assert cluster.namespaces == {"shop": {"team": "a"}}
    assert [(p.name, p.namespace) for p in cluster.pods] == [("one", "shop")]


def test_exported_objects_are_accepted(tmp_path):
    exported = """
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata:
    name: web
    namespace: default
    uid: 0b6c9f3e-1111-2222-3333-444455556666
    resourceVersion: "123456"
    generation: 3
    creationTimestamp: "2024-01-01T00:00:00Z"
    managedFields: [{manager: kubectl, operation: Update}]
    annotations: {deployment.kubernetes.io/revision: "1"}
  spec:
    replicas: 2
    selector: {matchLabels: {app: web}}
    template:
      metadata: {creationTimestamp: null, labels: {app: web}}
      spec: {containers: [{name: app, image: nginx}]}
  status: {replicas: 2, readyReplicas: 2}
- apiVersion: apps/v1
  kind: ReplicaSet
  metadata:
    name: web-5d4f8c7b9
    ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: web, controller: true, uid: x}]
  spec:
    replicas: 2
    selector: {matchLabels: {app: web}}
    template: {metadata: {labels: {app: web}}, spec: {containers: [{name: app, image: nginx}]}}
- apiVersion: v1
  kind: Pod
  metadata:
    name: web-5d4f8c7b9-abcde
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d4f8c7b9, controller: true, uid: y}]
  spec: {nodeName: gke-pool-1-abc, containers: [{name: app, image: nginx}]}
  status: {phase: Running, podIP: 10.8.0.12}
- apiVersion: v1
  kind: Service
  metadata: {name: web, uid: z, resourceVersion: "9"}
  spec:
    type: NodePort
    clusterIP: 10.96.12.34
    clusterIPs: [10.96.12.34]
    ipFamilies: [IPv4]
    ipFamilyPolicy: SingleStack
    sessionAffinity: None
    externalTrafficPolicy: Cluster
    internalTrafficPolicy: Cluster
    selector: {app: web}
    ports: [{port: 80, targetPort: 8080, nodePort: 31234, protocol: TCP}]
  status: {loadBalancer: {}}
"""
    cluster = load(tmp_path, exported)
    assert [p.owner_kind for p in cluster.pods] == ["Deployment", "Deployment"]  # made afresh, not duplicated
    service = cluster.service("web")
    assert (service.cluster_ip, service.ports[0].node_port) == ("10.96.12.34", 31234)
    assert cluster.strict_problems == []  # default values of unhonoured fields are not warned about
    assert any("skipped 2 objects that a controller in these manifests makes" in w and "1 Pod" in w
               and "1 ReplicaSet" in w for w in cluster.warnings)


def test_ignored_kinds_get_one_grouped_warning_and_a_full_list(tmp_path):
    docs = [f"apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: sa-{i}}}" for i in range(3)]
    docs += ["apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r, namespace: shop}",
             "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}"]
    cluster = load(tmp_path, *docs, workload("Deployment"))
    grouped = [w for w in cluster.warnings if w.startswith("ignored")]
    assert grouped == ["ignored 5 objects the lab does not model: 3 ServiceAccount, 1 ConfigMap, 1 Role "
                       "(listed in the JSON report)"]
    assert len(cluster.ignored) == 5
    assert cluster.ignored[3] == {"kind": "Role", "apiVersion": "rbac.authorization.k8s.io/v1", "name": "r",
                                  "namespace": "shop", "source": str(tmp_path / "m.yaml")}
    assert cluster.strict_problems == []  # RBAC and ConfigMaps are not workloads: --strict lets them pass


# --- services ------------------------------------------------------------------------------------------


def test_unhonoured_service_fields_are_warned_by_name(tmp_path):
    service = SERVICE.replace("  type: NodePort\n", "  type: LoadBalancer\n  sessionAffinity: ClientIP\n"
                              "  externalIPs: [192.0.2.7]\n  trafficDistribution: PreferClose\n")
    cluster = load(tmp_path, workload("Deployment"), service)
    fields = [re.search(r"\): (spec\.\w+) ", w).group(1) for w in cluster.strict_problems]
    assert fields == ["spec.externalIPs"]  # sessionAffinity and trafficDistribution are honoured now
    assert 'spec.externalIPs ["192.0.2.7"] is not honoured by the lab' in cluster.strict_problems[0]
    extra = ("  loadBalancerClass: service.k8s.aws/nlb\n  ipFamilyPolicy: RequireDualStack\n"
             "  ipFamilies: [IPv4]\n")
    cluster = load(tmp_path, workload("Deployment"), SERVICE.replace("  type: NodePort\n", "  type: LoadBalancer\n"
                                                                     + extra))
    fields = [re.search(r"\): (spec\.\w+) ", w).group(1) for w in cluster.strict_problems]
    assert fields == ["spec.ipFamilyPolicy", "spec.loadBalancerClass"]
    for harmless in ("SingleStack", "PreferDualStack"):  # what a single-stack cluster serves as IPv4
        quiet = SERVICE.replace("  type: NodePort\n", f"  type: NodePort\n  ipFamilyPolicy: {harmless}\n")
        assert not load(tmp_path, workload("Deployment"), quiet).strict_problems


def test_unhonoured_pod_fields_are_warned_with_their_index(tmp_path):
    spec = "      hostNetwork: true\n      readinessGates: [{conditionType: target-health.elbv2.k8s.aws/web}]\n"
    deploy = workload("Deployment", spec=spec).replace("containerPort: 8080, name: http", "containerPort: 8080, "
                                                       "name: http, hostPort: 80")
    cluster = load(tmp_path, deploy)
    assert [w.split("): ")[1].split(" ")[0] for w in cluster.strict_problems] == [
        "spec.template.spec.hostNetwork", "spec.template.spec.containers[0].ports[0].hostPort",
        "spec.template.spec.readinessGates"]


def test_numeric_target_port_needs_no_container_port(tmp_path):
    bare = workload("Deployment").replace(", ports: [{containerPort: 8080, name: http}]", "")
    service = SERVICE.replace("targetPort: 8080", "targetPort: 9000")
    cluster = load(tmp_path, bare, service)
    assert {e.port for e in endpoints(cluster, cluster.services[0], cluster.services[0].ports[0])} == {9000}
    named = SERVICE.replace("targetPort: 8080", "targetPort: web")
    assert 'targetPort "web" is not a port name of any selected pod' in error(tmp_path, bare, named)


def test_service_without_pods_warns(tmp_path):
    cluster = load(tmp_path, SERVICE.replace("app: web", "app: nothing"))
    assert any(w.endswith("no endpoints: selector app=nothing matches no pod: check the selector against the pods' "
                          "labels and namespace") for w in cluster.warnings)


def test_cluster_ip_services_are_modelled_without_node_ports(tmp_path):
    internal = SERVICE.replace("  type: NodePort\n", "")
    cluster = load(tmp_path, workload("Deployment"), internal)
    assert cluster.services[0].type == "ClusterIP" and cluster.services[0].ports[0].node_port is None
    assert "nodePort may not be set when type is ClusterIP" in error(
        tmp_path, internal.replace("targetPort: 8080", "targetPort: 8080, nodePort: 30001"))
    assert '"10.96.0.300" is not an IPv4 address' in error(tmp_path, internal.replace("spec:\n", "spec:\n  clusterIP: "
                                                                                      "10.96.0.300\n", 1))
    assert "may be None (headless) only for type ClusterIP" in error(
        tmp_path, SERVICE.replace("spec:\n", "spec:\n  clusterIP: None\n", 1))


def test_external_name_is_warned_and_left_out(tmp_path):
    alias = ("apiVersion: v1\nkind: Service\nmetadata: {name: db}\n"
             "spec: {type: ExternalName, externalName: db.example.com}")
    cluster = load(tmp_path, alias)
    assert cluster.services == []
    assert any('of type ExternalName is a DNS alias (to "db.example.com")' in w for w in cluster.warnings)


def test_helm_test_pods_are_hooks_not_workloads(tmp_path):
    hook = """
apiVersion: v1
kind: Pod
metadata:
  name: store-test-connection
  annotations: {"helm.sh/hook": test}
spec:
  restartPolicy: Never
  containers: [{name: wget, image: busybox, command: [wget, "store:80"]}]
"""
    cluster = load(tmp_path, workload("Deployment", replicas=1), hook)
    assert [p.owner_kind for p in cluster.pods] == ["Deployment"]
    assert "skipped 1 Helm hook Pod (store-test-connection): Helm runs them only as hooks (helm test), to " \
           "completion" in cluster.warnings
