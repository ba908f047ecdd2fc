"""lab.kube.names: the Kubernetes name grammars and the lab's own reserved and shell-safe rules."""

from __future__ import annotations

import pytest

from lab.errors import LabError, ManifestError, Origin
from lab.kube import names

ORIGIN = Origin("Pod", "web", "pod.yaml")


@pytest.mark.parametrize("value", ["a", "web-1", "123-abc", "a" * 63])
def test_dns1123_label_ok(value):
    assert names.dns1123_label_problem(value) is None


@pytest.mark.parametrize("value", ["", "Web", "web_1", "-web", "web-", "a.b", "a" * 64])
def test_dns1123_label_bad(value):
    assert names.dns1123_label_problem(value)


@pytest.mark.parametrize("value", ["web", "web.example.com", "1.2-3", "a" * 253])
def test_dns1123_subdomain_ok(value):
    assert names.dns1123_subdomain_problem(value) is None


@pytest.mark.parametrize("value", ["", "web..com", ".web", "web.", "Web.com", "a-.b", "a" * 254])
def test_dns1123_subdomain_bad(value):
    assert names.dns1123_subdomain_problem(value)


@pytest.mark.parametrize(("value", "ok"), [("web", True), ("w1", True), ("1web", False), ("web.a", False)])
def test_dns1035_label(value, ok):
    assert (names.dns1035_label_problem(value) is None) is ok


@pytest.mark.parametrize("value", ["http", "http-alt", "h2c", "a" * 15, "9000-x"])
def test_iana_svc_name_ok(value):
    assert names.iana_svc_name_problem(value) is None


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("a" * 16, "more than 15"),
        ("Http", "only lowercase"),
        ("http_alt", "only lowercase"),
        ("8080", "at least one letter"),
        ("http--alt", "'--'"),
        ("-http", "start or end"),
        ("http-", "start or end"),
    ],
)
def test_iana_svc_name_bad(value, needle):
    assert needle in names.iana_svc_name_problem(value)


@pytest.mark.parametrize("key", ["app", "App_1.x", "kubernetes.io/hostname", "example.com/tier"])
def test_label_key_ok(key):
    assert names.label_key_problem(key) is None


@pytest.mark.parametrize("key", ["", "/app", "a/b/c", "Example.com/app", "app-", "x/" + "a" * 64, "-app"])
def test_label_key_bad(key):
    assert names.label_key_problem(key)


@pytest.mark.parametrize(("value", "ok"), [("", True), ("v1.2_3-x", True), ("-v", False), ("a" * 64, False)])
def test_label_value(value, ok):
    assert (names.label_value_problem(value) is None) is ok


def test_reserved_names():
    assert names.reserved_problem("client")
    assert names.reserved_problem("kube-proxy")
    assert names.reserved_problem("npl-n1")
    assert names.reserved_problem("web") is None
    assert names.reserved_problem("client", exact=False) is None
    assert names.reserved_problem("npl-web", exact=False)


def test_object_names_follow_the_kind():
    names.validate_object_name("Service", "web", Origin("Service", "web"))
    names.validate_object_name("Pod", "web.v2", ORIGIN)
    with pytest.raises(ManifestError, match="DNS-1035"):
        names.validate_object_name("Service", "web.v2", Origin("Service", "web.v2"))
    with pytest.raises(ManifestError, match="reserved"):
        names.validate_object_name("Node", "client", Origin("Node", "client"))
    # A Deployment named "client" only prefixes pod names ("client-..."), which collide with nothing.
    names.validate_object_name("Deployment", "client", Origin("Deployment", "client"))
    with pytest.raises(ManifestError, match="is required"):
        names.validate_object_name("Pod", "", ORIGIN)


def test_validation_error_is_one_line_with_field_and_suggestion():
    with pytest.raises(ManifestError) as caught:
        names.validate_dns1123_label("My_Namespace", ORIGIN, "metadata.namespace")
    error = caught.value
    assert (error.kind, error.name, error.field, error.source) == (
        "Pod",
        "web",
        "metadata.namespace",
        "pod.yaml",
    )
    assert str(error).startswith(
        'Pod "web" (pod.yaml): metadata.namespace "My_Namespace" is not a DNS-1123 label'
    )
    assert str(error).endswith('rename it, e.g. "my-namespace"')


def test_labels_are_checked_key_and_value():
    names.validate_labels({"app": "web", "example.com/tier": ""}, ORIGIN, "metadata.labels")
    with pytest.raises(ManifestError, match=r"metadata.labels key"):
        names.validate_labels({"bad key": "x"}, ORIGIN, "metadata.labels")
    with pytest.raises(ManifestError, match=r"metadata.labels\[app\]"):
        names.validate_labels({"app": "web!"}, ORIGIN, "metadata.labels")


def test_suggest():
    assert names.suggest("My_App") == "my-app"
    assert names.suggest("9lives", letter_first=True) == "x-9lives"
    assert names.suggest("A..b", dots=True) == "a.b"
    assert names.suggest("___") == ""


def test_shell_safe():
    assert names.shell_safe("web-1.default") == "web-1.default"
    for bad in ["web;reboot", "Web", "a b", "$(x)", ""]:
        with pytest.raises(LabError, match="shell command"):
            names.shell_safe(bad)
