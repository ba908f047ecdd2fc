"""``python -m lab apply``'s input side: what is refused before any network is built, and with which exit."""

from __future__ import annotations

import io

from lab import cli

INTERNAL = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: app, image: nginx}]}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
"""
JOB = "---\napiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate}\nspec: {}\n"


def test_apply_needs_manifests(capsys):
    assert cli.main(["apply"]) == 2
    assert capsys.readouterr().err.strip() == "error: apply needs manifests: -f FILE|FOLDER|- or -k DIR"


def test_standard_input_is_read_and_cluster_ip_only_sets_say_why_nothing_is_probed_from_outside(capsys, monkeypatch):
    """A ClusterIP-only set is probed from inside (``--via clusterIP``, the default); asked for nodePorts
    only, it says why there is nothing to probe, before anything is built."""
    monkeypatch.setattr("sys.stdin", io.StringIO(INTERNAL))
    assert cli.main(["apply", "-f", "-", "--via", "nodePort"]) == 1
    err = capsys.readouterr().err
    assert "error: the manifests define no NodePort or LoadBalancer Service, so --via nodePort has nothing to " \
           "probe: add --via clusterIP, or a Service of type NodePort" in err
    assert "no Node objects in the manifests: the lab made 3 nodes (node-a, node-b, node-c)" in err


def test_strict_turns_ignored_workloads_into_an_error(capsys, monkeypatch, tmp_path):
    path = tmp_path / "set.yaml"
    path.write_text(INTERNAL + JOB)
    assert cli.main(["apply", "-f", str(path), "--strict"]) == 1
    err = capsys.readouterr().err
    assert "warning: 1 Job/CronJob object (Job/migrate)" in err
    assert "error: --strict: 1 warning(s) about workload kinds or fields the lab does not honour " \
           "(first: 1 Job/CronJob" \
           in err


def test_manifest_errors_exit_2(capsys, tmp_path):
    path = tmp_path / "set.yaml"
    path.write_text(INTERNAL.replace("name: web}", "name: Web}", 1))
    assert cli.main(["apply", "-f", str(path), "--nodes", "2"]) == 2
    assert 'error: Deployment "Web" (' in capsys.readouterr().err
