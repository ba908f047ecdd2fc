"""The bandwidth scenario's cluster: three nodes, the Service's one pod, two bystanders, the paths measured.

Names, ports and manifests are fixed here once, for the runs, the analysis and the rendering alike
(``lab.scenarios.bandwidth`` has the picture). The Service ``bulk`` has exactly one pod because iperf3's
control and data connections are separate connections, which two pods could split between them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lab.kube.manifests import load_manifests
from lab.kube.model import Cluster

POD_NODE, OTHER_NODE, RX_NODE = "node-b", "node-a", "node-c"  # the pod; the detour's entry; the bystander's receiver
SERVICE, SERVER_POD = "bulk", "bulk-server"
BYSTANDER_TX, BYSTANDER_RX = "bystander-tx", "bystander-rx"
IPERF3_PORT, IPERF3_NODE_PORT = 5201, 30201
HTTP_NODE_PORT, DIRECT_PORT = 30080, 8081

MANIFESTS = f"""
apiVersion: v1
kind: Node
metadata: {{name: {OTHER_NODE}}}
---
apiVersion: v1
kind: Node
metadata: {{name: {POD_NODE}}}
---
apiVersion: v1
kind: Node
metadata: {{name: {RX_NODE}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {SERVER_POD}, labels: {{app: {SERVICE}}}}}
spec:
  nodeName: {POD_NODE}
  containers:
    - name: server
      image: networkstatic/iperf3
      ports:
        - {{name: iperf3, containerPort: {IPERF3_PORT}}}
        - {{name: http, containerPort: 8080}}
        - {{name: http-direct, containerPort: {DIRECT_PORT}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {BYSTANDER_TX}, labels: {{app: bystander-tx}}}}
spec: {{nodeName: {OTHER_NODE}, containers: [{{name: client, image: networkstatic/iperf3}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {BYSTANDER_RX}, labels: {{app: bystander-rx}}}}
spec:
  nodeName: {RX_NODE}
  containers: [{{name: server, image: networkstatic/iperf3, ports: [{{name: iperf3, containerPort: {IPERF3_PORT}}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {SERVICE}}}
spec:
  type: NodePort
  externalTrafficPolicy: Cluster
  selector: {{app: {SERVICE}}}
  ports:
    - {{name: iperf3, port: {IPERF3_PORT}, targetPort: iperf3, nodePort: {IPERF3_NODE_PORT}}}
    - {{name: http, port: 80, targetPort: http, nodePort: {HTTP_NODE_PORT}}}
"""

# The latency paths, with what each crosses one way: shaped links (each node's link to the underlay) and
# switch traversals (topologies.cluster: the client hangs off the underlay by an unshaped link).
LATENCY_PATHS = {
    "direct": {"label": f"direct to the pod IP ({POD_NODE})", "shapedLinks": 1, "switches": 2},
    "podNode": {"label": f"nodePort via {POD_NODE} (pod's node)", "shapedLinks": 1, "switches": 2},
    "forwarded": {"label": f"nodePort via {OTHER_NODE}, forwarded", "shapedLinks": 3, "switches": 4},
}


def bandwidth_cluster() -> Cluster:
    with tempfile.TemporaryDirectory(prefix="npl-bandwidth-") as tmp:
        path = Path(tmp) / "bandwidth.yaml"
        path.write_text(MANIFESTS)
        return load_manifests([str(path)])
