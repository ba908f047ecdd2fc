"""Which names the lab accepts: the Kubernetes API's rules, plus the lab's own where names reach a shell.

Kubernetes validates every name against one of a few grammars (``k8s.io/apimachinery`` validation):

- DNS-1123 label (namespaces, container names, Service port names): at most 63 characters of
  ``[a-z0-9]([-a-z0-9]*[a-z0-9])?``;
- DNS-1123 subdomain (Node, Pod, Deployment names): at most 253 characters, dot-separated labels;
- DNS-1035 label (Service names): a DNS-1123 label that starts with a letter;
- IANA_SVC_NAME (container port names, named targetPorts): at most 15 characters of ``[a-z0-9-]`` with
  at least one letter, no leading, trailing or doubled ``-``;
- label keys (an optional DNS-1123 subdomain prefix and ``/``, then a name of at most 63 characters of
  ``[A-Za-z0-9_.-]`` starting and ending alphanumeric) and label values (empty, or the same as a name).

The lab adds two rules of its own because every Node and Pod becomes a Mininet host whose name is used in
shell commands and sits beside the lab's own hosts and interfaces: such names must not collide with the
reserved names (``client``, anything starting with ``npl-``), and ``shell_safe`` guards every name that
is interpolated into a command (only ``[a-z0-9.-]``, which all the grammars above except label syntax
already guarantee).

Each grammar is a pure ``*_problem`` function (``None`` when the value is fine, else what is wrong) and a
``validate_*`` wrapper that raises a one-line ``ManifestError`` naming the object and field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from lab.errors import LabError, Origin, shown
from lab.kube import addressing

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
IANA_SVC_NAME_MAX = 15
LABEL_NAME_MAX = 63

# Mininet keeps hosts, switches and controllers in one name space: the outside client and the
# controller (lab.emulation.network names it "kube-proxy") are taken.
RESERVED_NAMES = frozenset({addressing.CLIENT_NAME, addressing.LB_NAME, "kube-proxy"})
RESERVED_PREFIX = addressing.PREFIX

# Kinds whose objects become Mininet hosts, or (Deployments) prefix the names of pods that do.
HOST_KINDS = frozenset({"Node", "Pod", "Deployment"})

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_IANA_SVC_NAME = re.compile(r"[-a-z0-9]+")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_SHELL_SAFE = re.compile(r"[a-z0-9.-]+")


def dns1123_label_problem(value: str) -> str | None:
    if len(value) > DNS1123_LABEL_MAX:
        return f"is {len(value)} characters long, more than {DNS1123_LABEL_MAX}"
    if not _DNS1123_LABEL.fullmatch(value):
        return (
            "is not a DNS-1123 label (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit)"
        )
    return None


def dns1123_subdomain_problem(value: str) -> str | None:
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        return f"is {len(value)} characters long, more than {DNS1123_SUBDOMAIN_MAX}"
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        return (
            "is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit)"
        )
    return None


def dns1035_label_problem(value: str) -> str | None:
    if len(value) > DNS1123_LABEL_MAX:
        return f"is {len(value)} characters long, more than {DNS1123_LABEL_MAX}"
    if not _DNS1035_LABEL.fullmatch(value):
        return (
            "is not a DNS-1035 label (lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit)"
        )
    return None


def iana_svc_name_problem(value: str) -> str | None:
    if len(value) > IANA_SVC_NAME_MAX:
        return f"is {len(value)} characters long, more than {IANA_SVC_NAME_MAX} (IANA_SVC_NAME)"
    if not _IANA_SVC_NAME.fullmatch(value):
        return "may contain only lowercase letters, digits and '-' (IANA_SVC_NAME)"
    if not re.search(r"[a-z]", value):
        return "must contain at least one letter (IANA_SVC_NAME)"
    if "--" in value:
        return "must not contain '--' (IANA_SVC_NAME)"
    if value.startswith("-") or value.endswith("-"):
        return "must not start or end with '-' (IANA_SVC_NAME)"
    return None


def label_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return "has an empty prefix before '/'"
        if "/" in prefix:
            return "has more than one '/'"
        if dns1123_subdomain_problem(prefix):
            return f'has prefix "{prefix}" that is not a DNS-1123 subdomain'
    if not name:
        return "has an empty name"
    if len(name) > LABEL_NAME_MAX:
        return f"has a name part of {len(name)} characters, more than {LABEL_NAME_MAX}"
    if not _LABEL_NAME.fullmatch(name):
        return (
            "is not a valid label key (letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit, optionally after 'prefix/')"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if value == "":
        return None
    if len(value) > LABEL_NAME_MAX:
        return f"is {len(value)} characters long, more than {LABEL_NAME_MAX}"
    if not _LABEL_NAME.fullmatch(value):
        return (
            "is not a valid label value (letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit)"
        )
    return None


def reserved_problem(value: str, *, exact: bool = True) -> str | None:
    """The lab's own rule: names of hosts and links it creates itself are not available to manifests.

    ``exact=False`` checks only the prefix, for names (Deployments) that only ever prefix a host name.
    """
    if exact and value in RESERVED_NAMES:
        return f"is reserved for the lab's own {value} node in the Mininet network"
    if value.startswith(RESERVED_PREFIX):
        return f'starts with "{RESERVED_PREFIX}", which the lab reserves for its own bridges and links'
    return None


def is_shell_safe(value: str) -> bool:
    return bool(_SHELL_SAFE.fullmatch(value))


def shell_safe(name: str) -> str:
    """Return ``name`` unchanged if it may be interpolated into a shell command, else raise ``LabError``.

    Validated object names always pass; this is the last guard where a name meets a command line.
    """
    if not is_shell_safe(name):
        raise LabError(
            f'refusing to use {shown(name)} in a shell command',
            "use only lowercase letters, digits, '.' and '-' in Node and Pod names",
        )
    return name


def suggest(value: str, *, dots: bool = False, letter_first: bool = False, limit: int = 63) -> str:
    """A nearby valid name, offered in the fix so the user can copy it."""
    allowed = r"[^a-z0-9.-]" if dots else r"[^a-z0-9-]"
    text = re.sub(allowed, "-", value.lower())
    text = re.sub(r"-{2,}", "-", text)
    text = re.sub(r"\.{2,}", ".", text)
    text = text[:limit].strip("-.")
    if letter_first and text and not text[0].isalpha():
        text = ("x-" + text)[:limit].rstrip("-.")
    return text


def _check(problem: str | None, value: str, origin: Origin, field: str, fix: str) -> None:
    if problem:
        raise origin.error(field, f'{shown(value)} {problem}', fix)


def _rename_fix(suggestion: str) -> str:
    if suggestion:
        return f'rename it, e.g. "{suggestion}"'
    return "rename it using lowercase letters, digits and '-'"


def validate_dns1123_label(value: str, origin: Origin, field: str) -> None:
    _check(dns1123_label_problem(value), value, origin, field, _rename_fix(suggest(value)))


def validate_dns1123_subdomain(value: str, origin: Origin, field: str) -> None:
    fix = _rename_fix(suggest(value, dots=True, limit=DNS1123_SUBDOMAIN_MAX))
    _check(dns1123_subdomain_problem(value), value, origin, field, fix)


def validate_dns1035_label(value: str, origin: Origin, field: str) -> None:
    fix = _rename_fix(suggest(value, letter_first=True))
    _check(dns1035_label_problem(value), value, origin, field, fix)


def validate_port_name(value: str, origin: Origin, field: str) -> None:
    """Container port names and named targetPorts (IANA_SVC_NAME)."""
    fix = _rename_fix(suggest(value, letter_first=True, limit=IANA_SVC_NAME_MAX))
    _check(iana_svc_name_problem(value), value, origin, field, fix)


def validate_namespace(value: str, origin: Origin, field: str = "metadata.namespace") -> None:
    validate_dns1123_label(value, origin, field)


def validate_object_name(kind: str, value: str, origin: Origin, field: str = "metadata.name") -> None:
    """The API's grammar for ``kind`` and, for kinds that become Mininet hosts, the lab's reserved names."""
    if not value:
        raise origin.error(field, "is required", f"give the {kind} a name")
    if kind == "Service":
        validate_dns1035_label(value, origin, field)
    else:
        validate_dns1123_subdomain(value, origin, field)
    if kind in HOST_KINDS:
        problem = reserved_problem(value, exact=kind != "Deployment")
        _check(problem, value, origin, field, "rename it")


def validate_labels(labels: Mapping[str, str], origin: Origin, field: str) -> None:
    """Label maps and selectors (``matchLabels``, ``nodeSelector``, ``spec.selector``) share one syntax."""
    for key, value in labels.items():
        _check(label_key_problem(key), key, origin, f"{field} key", "fix the label key")
        _check(label_value_problem(value), value, origin, f"{field}[{key}]", "fix the label value")
