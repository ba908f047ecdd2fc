"""The Service fields kube-proxy honours inside the cluster, read from YAML: clusterIP (and headless),
internalTrafficPolicy, sessionAffinity, loadBalancerSourceRanges, UDP ports; bad values rejected."""

from __future__ import annotations

from tests.unit.test_manifests import error, load


def svc(spec: str, kind_type: str = "ClusterIP", ports: str = "[{port: 80, targetPort: 8080}]") -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: {kind_type}
  selector: {{app: web}}
  ports: {ports}
{spec}
"""


def test_cluster_ip_service_fields_are_read(tmp_path):
    cluster = load(tmp_path, svc("""
  clusterIP: 10.96.0.80
  internalTrafficPolicy: Local
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 5}}
"""))
    web = cluster.service("web")
    assert (web.type, web.cluster_ip, web.internal_traffic_policy, web.session_affinity_timeout) == (
        "ClusterIP", "10.96.0.80", "Local", 5)
    assert web.ports[0].node_port is None


def test_affinity_defaults_to_three_hours_and_headless_is_kept(tmp_path):
    assert load(tmp_path, svc("  sessionAffinity: ClientIP")).service("web").session_affinity_timeout == 10800
    assert load(tmp_path, svc("  clusterIP: None")).service("web").headless


def test_source_ranges_and_udp_ports_are_read(tmp_path):
    web = load(tmp_path, svc("  loadBalancerSourceRanges: [192.0.2.0/24, 198.51.100.7/32]", "LoadBalancer",
                             "[{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53}]")).service("web")
    assert web.load_balancer_source_ranges == ("192.0.2.0/24", "198.51.100.7/32")
    assert [p.protocol for p in web.ports] == ["UDP", "TCP"]


def test_bad_in_cluster_fields_are_rejected_with_the_field_and_the_fix(tmp_path):
    assert "spec.clusterIP 10.244.1.9 is in the pod network (10.244.0.0/16), which the lab uses" in error(
        tmp_path, svc("  clusterIP: 10.244.1.9"))
    assert load(tmp_path, svc("  clusterIP: 10.100.3.4")).service("web").cluster_ip == "10.100.3.4"  # EKS-style
    assert "spec.clusterIP may be None (headless) only for type ClusterIP, not NodePort" in error(
        tmp_path, svc("  clusterIP: None", "NodePort"))
    assert "spec.internalTrafficPolicy" in error(tmp_path, svc("  internalTrafficPolicy: Nearby"))
    zero = "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}"
    message = error(tmp_path, svc(zero))
    assert "timeoutSeconds 0 is outside 1-86400" in message
    assert "spec.loadBalancerSourceRanges[0]" in error(tmp_path, svc("  loadBalancerSourceRanges: [nowhere]",
                                                                     "LoadBalancer"))
    assert "spec.ports[0].nodePort may not be set when type is ClusterIP" in error(
        tmp_path, svc("", ports="[{port: 80, nodePort: 30001}]"))


def test_source_ranges_on_a_node_port_service_warn(tmp_path):
    cluster = load(tmp_path, svc("  loadBalancerSourceRanges: [192.0.2.0/24]", "NodePort"))
    assert any("loadBalancerSourceRanges has no effect on type NodePort" in w for w in cluster.warnings)


def test_publish_not_ready_addresses_is_read_and_must_be_a_boolean(tmp_path):
    cluster = load(tmp_path, svc("  publishNotReadyAddresses: true"))
    assert cluster.service("web").publish_not_ready
    assert not any("publishNotReadyAddresses" in w for w in cluster.warnings)
    assert not load(tmp_path, svc("  publishNotReadyAddresses: false")).service("web").publish_not_ready
    assert 'spec.publishNotReadyAddresses is "true", not a boolean' in error(
        tmp_path, svc('  publishNotReadyAddresses: "true"'))
