"""Input as kubectl takes it (files, folders, -R, -, JSON, -k) and hostile input: one line, quickly, bounded.

The hostile corpus is what an adversarial user tried on the lab: alias bombs, deep nesting, huge numbers,
binary and non-UTF-8 bytes, wrong types everywhere, names with shell metacharacters, newlines, terminal
escapes and homoglyphs, oversized files. Each must give one ``ManifestError`` line that names the source
(and, past parsing, the object and field), quotes at most a short prefix of the bad value, in well under
a second.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import pytest

from lab.errors import SHOWN_MAX, ManifestError
from lab.kube.manifests import load_manifests, reader

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: nginx}]}
"""
SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {type: NodePort, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
"""
MESSAGE_MAX = 700  # characters: a line a terminal or CI log shows whole


def write(path: Path, text: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def refused(*paths: str, **kwargs) -> str:
    started = time.monotonic()
    with pytest.raises(ManifestError) as caught:
        load_manifests(list(paths), **kwargs)
    assert time.monotonic() - started < 5  # "about a second" on a loaded 2-core machine
    message = str(caught.value)
    assert "\n" not in message and len(message) <= MESSAGE_MAX, message
    return message


# --- kubectl-style input -------------------------------------------------------------------------------


def test_folders_take_yaml_yml_and_json_in_name_order(tmp_path):
    write(tmp_path / "b.yml", SERVICE)
    write(tmp_path / "a.json", json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo"},
                                           "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))
    write(tmp_path / "c.yaml", DEPLOYMENT)
    write(tmp_path / "notes.txt", "not a manifest")
    cluster = load_manifests([str(tmp_path)])
    assert [p.name for p in cluster.pods][0] == "solo"
    assert len(cluster.pods) == 3 and cluster.services[0].name == "web"


def test_recursive_walks_sub_folders(tmp_path):
    write(tmp_path / "app" / "deploy" / "web.yaml", DEPLOYMENT)
    write(tmp_path / "app" / "svc" / "web.yaml", SERVICE)
    message = refused(str(tmp_path / "app"))
    assert message.endswith("folder holds no *.yaml, *.yml or *.json files, only sub-folders: add -R (--recursive) "
                            "to read the sub-folders too")
    cluster = load_manifests([str(tmp_path / "app")], recursive=True)
    assert len(cluster.pods) == 2 and len(cluster.services) == 1


def test_paths_in_messages_are_as_typed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "set" / "web.yaml", DEPLOYMENT.replace("name: web}", "name: Web}"))
    message = refused("./set/")
    assert message.startswith('Deployment "Web" (./set/web.yaml): metadata.name "Web" is not a DNS-1123 subdomain')


def test_a_kustomization_in_a_folder_is_skipped_with_advice(tmp_path):
    write(tmp_path / "base" / "kustomization.yaml", "resources: [web.yaml]\n")
    write(tmp_path / "base" / "web.yaml", DEPLOYMENT)
    cluster = load_manifests([str(tmp_path / "base")])
    assert len(cluster.pods) == 2
    assert f"{tmp_path / 'base' / 'kustomization.yaml'}: skipped: a kustomization is not a manifest; to render it, " \
           f"use -k {tmp_path / 'base'}" in cluster.warnings
    message = refused(str(tmp_path / "base" / "kustomization.yaml"))
    assert message.endswith(f"is a kustomization, not a manifest: render it with -k {tmp_path / 'base'}")


def test_helm_charts_and_templates_say_to_render_them(tmp_path):
    write(tmp_path / "chart" / "Chart.yaml", "apiVersion: v2\nname: store\nversion: 1.0.0\n")
    write(tmp_path / "chart" / "templates" / "svc.yaml", "metadata:\n  name: {{ .Release.Name }}\n")
    assert refused(str(tmp_path / "chart")).endswith(
        f"is a Helm chart, not rendered manifests: render it first: helm template NAME {tmp_path / 'chart'} | "
        "python -m lab apply -f -")
    message = refused(str(tmp_path / "chart" / "templates" / "svc.yaml"))
    assert "YAML syntax error" in message and "this looks like a Helm template" in message


def test_standard_input(tmp_path):
    cluster = load_manifests(["-"], stdin=io.StringIO(DEPLOYMENT + "\n---\n" + SERVICE))
    assert len(cluster.pods) == 2
    message = refused("-", stdin=io.StringIO("kind: [\n"))
    assert message.startswith("-: line 2, column 1: YAML syntax error")
    assert "named twice" in refused("-", "-", stdin=io.StringIO(""))


def test_json_and_json_errors(tmp_path):
    doc = {"apiVersion": "v1", "kind": "List", "items": [json.loads(json.dumps(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "i"}]}}))]}
    assert [p.name for p in load_manifests([write(tmp_path / "l.json", json.dumps(doc, indent=1))]).pods] == ["p"]
    flow = "{apiVersion: v1, kind: Pod, metadata: {name: flow}, spec: {containers: [{name: c, image: i}]}}"
    assert [p.name for p in load_manifests([write(tmp_path / "flow.yaml", flow)]).pods] == ["flow"]  # YAML, not JSON
    message = refused(write(tmp_path / "bad.json", '{"kind": "Pod",\n "metadata": {"name": "x"}'))
    assert message.startswith(f"{tmp_path / 'bad.json'}: line 2, column 27: JSON syntax error")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders kustomizations")
def test_kustomize_renders_with_kubectl(tmp_path):
    write(tmp_path / "base" / "kustomization.yaml", "resources: [web.yaml, svc.yaml]\nnamespace: shop\n"
          "commonLabels: {team: a}\n")
    write(tmp_path / "base" / "web.yaml", DEPLOYMENT)
    write(tmp_path / "base" / "svc.yaml", SERVICE)
    cluster = load_manifests(kustomize=[str(tmp_path / "base")])
    assert {p.namespace for p in cluster.pods} == {"shop"} and cluster.pods[0].labels["team"] == "a"
    assert cluster.service("web", "shop").selector == {"app": "web", "team": "a"}
    broken = write(tmp_path / "broken" / "kustomization.yaml", "resources: [missing.yaml]\n")
    assert "kubectl kustomize failed" in refused(kustomize=[str(Path(broken).parent)])
    assert "holds no kustomization.yaml" in refused(kustomize=[str(tmp_path / "base" / "..")])


def test_kustomize_without_kubectl_says_how_to_get_it(tmp_path, monkeypatch):
    write(tmp_path / "kustomization.yaml", "resources: []\n")
    monkeypatch.setattr(reader.shutil, "which", lambda name: None)
    message = refused(kustomize=[str(tmp_path)])
    assert "-k needs kubectl" in message and "install kubectl" in message and "kustomize build DIR |" in message


# --- hostile input: parsing ----------------------------------------------------------------------------

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("alias bomb", BOMB, "aliases expand to more than 2,000,000 values"),
    ("deep flow nesting", "[" * 100_000 + "]" * 100_000, "nesting is deeper than 100 levels"),
    ("deep block nesting", "".join(" " * i + "a:\n" for i in range(5000)), "nesting is deeper than 100 levels"),
    ("deep JSON", '{"a":' * 5000 + "1" + "}" * 5000, "nested deeper than 100 levels"),
    ("huge number", "kind: Service\nport: " + "9" * 5000, "a number of 5000 characters"),
    ("huge JSON number", '{"kind": "Pod", "n": ' + "9" * 5000 + "}", "JSON value cannot be read"),
    ("NUL bytes", b"kind: Pod\n\x00\x01\x02", "is binary, not text (a NUL byte at offset 10)"),
    ("random binary", bytes(range(256)) * 4, "is binary, not text"),
    ("latin-1", "kind: Pod\nmetadata: {name: caf\xe9}\n".encode("latin-1"), "line 2: is not UTF-8 (byte 0xe9"),
    ("control characters", "kind: Pod\nmetadata: {name: \x07bell}\n", "YAML syntax error"),
    ("python tag", "kind: !!python/object:os.system {}\n", "YAML syntax error"),
    ("unhashable key", "? [a, b]\n: c\nkind: Pod\n", "YAML syntax error"),
    ("impossible date", "kind: Pod\nwhen: 2024-13-45\n", "YAML value cannot be read"),
    ("duplicate key", "kind: Pod\nkind: Service\n", 'key "kind" is defined twice in one mapping'),
    ("a list, not an object", "- a\n- b\n", "document 1 is a list, not a Kubernetes object"),
    ("kind not a word", "kind: 'Pod; rm -rf /'\n", 'has kind "Pod; rm -rf /", which is no kind name'),
    ("kind a mapping", "kind: {a: b}\n", "has kind a mapping, which is no kind name"),
    ("List in a List", "kind: List\nitems: [{kind: List, items: []}]\n", "is a List inside a List"),
])
def test_hostile_files_are_refused_in_one_line(tmp_path, name, content, expected):
    message = refused(write(tmp_path / "evil.yaml", content))
    assert message.startswith(str(tmp_path / "evil.yaml")) and expected in message, (name, message)


def test_oversized_file(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "MAX_INPUT_BYTES", 1024 * 1024)
    message = refused(write(tmp_path / "big.yaml", "# " + "x" * (1024 * 1024)))
    assert message.endswith("is larger than 1 MiB: split it into smaller files")


def test_the_most_pods_on_the_most_nodes_is_still_quick(tmp_path):
    nodes = "\n---\n".join(f"apiVersion: v1\nkind: Node\nmetadata: {{name: n{i}}}" for i in range(200))
    message = refused(write(tmp_path / "big.yaml", nodes + "\n---\n" + deploy(replicas="600") + "\n---\n"
                            + deploy(name="api", replicas="600", labels="{app: api}")))
    assert "would make pod number 1001, but the lab runs at most 1000 pods" in message


def test_many_empty_documents_are_quick(tmp_path):
    assert "no NodePort" not in refused(write(tmp_path / "docs.yaml", "---\n" * 200_000 + "- x\n"))


# --- hostile input: objects --------------------------------------------------------------------------


def deploy(name: str = "web", replicas: str = "2", labels: str = "{app: web}", port: str = "8080") -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {labels}}}
  template:
    metadata: {{labels: {labels}}}
    spec: {{containers: [{{name: app, image: nginx, ports: [{{containerPort: {port}}}]}}]}}
"""


@pytest.mark.parametrize(("doc", "expected"), [
    (deploy(name='"web; rm -rf /"'), 'metadata.name "web; rm -rf /" is not a DNS-1123 subdomain'),
    (deploy(name='"$(reboot)"'), 'metadata.name "$(reboot)" is not a DNS-1123 subdomain'),
    (deploy(name='"web\\nkind: Node"'), 'metadata.name "web\\nkind: Node" is not a DNS-1123 subdomain'),
    (deploy(name='"\\e[31mred"'), 'metadata.name "\\u001b[31mred" is not a DNS-1123 subdomain'),
    (deploy(name="ngin\u0445"), 'metadata.name "ngin\\u0445" is not a DNS-1123 subdomain'),  # Cyrillic х
    (deploy(name="a" * 100_000), f'metadata.name "{"a" * SHOWN_MAX}..." (100,000 characters) is 100000 characters'),
    (deploy(replicas='"3"'), "spec.replicas is a string, not an integer"),
    (deploy(replicas="true"), "spec.replicas is a boolean, not an integer"),
    (deploy(replicas="1.5"), "spec.replicas is a number, not an integer"),
    (deploy(replicas="[1]"), "spec.replicas is a list, not an integer"),
    (deploy(replicas="-1"), "spec.replicas -1 is negative"),
    (deploy(replicas="1000000000"), "spec.replicas 1000000000 is more than the lab runs (1000 pods in all"),
    (deploy(port="99999"), "containers[0].ports[0].containerPort 99999 is outside 1-65535"),
    (deploy(port="9" * 30), "containerPort 999999999999999999999999999999 is outside 1-65535"),
    (deploy(port='"http"'), "containerPort is a string, not an integer"),
    (deploy(labels="{app: [1, 2]}"), "spec.template.metadata.labels[app] is a list, not a string: write app as a "
     "string"),
    (deploy(labels="{app: true}"), 'is a boolean, not a string: quote it: app: "true"'),
    (deploy(labels="{a: {b: {c: d}}}"), "is a mapping, not a string"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: []\n", "spec is a list, not a mapping"),
    ("apiVersion: v1\nkind: Pod\nmetadata: []\nspec: {}\n", "metadata is a list, not a mapping"),
    ("apiVersion: [v1]\nkind: Pod\nmetadata: {name: p}\n", "apiVersion a list does not serve Pod"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, targetPort: [1]}]}\n",
     "spec.ports[0].targetPort is a list"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: {port: 80}}\n",
     "spec.ports is a mapping, not a list"),
])
def test_hostile_objects_are_refused_naming_object_and_field(tmp_path, doc, expected):
    message = refused(write(tmp_path / "evil.yaml", doc))
    assert expected in message, message
    assert "\x1b" not in message


def test_names_in_a_message_head_cannot_forge_a_line(tmp_path):
    message = refused(write(tmp_path / "evil.yaml", deploy(name='"web\\nerror: all good \\e[0m"')))
    assert message.startswith('Deployment "web\\nerror: all good \\u001b[0m" (')


def test_an_aliased_structure_is_never_expanded_into_a_message(tmp_path):
    anchors = "  x-anchors:\n    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"    {chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(5))
    doc = deploy(labels="{app: *f}").replace("spec:\n  replicas", "spec:\n" + anchors + "  replicas", 1)
    doc = doc.replace("selector: {matchLabels: *f}", "selector: {matchLabels: {app: web}}")
    message = refused(write(tmp_path / "a.yaml", doc))  # 9^6 = 531,441 values behind one alias
    assert "is a list, not a string" in message
