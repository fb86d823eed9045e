#!/usr/bin/env python3
"""Lint and render charts/lockstep with Helm's own engine and validate every rendered object.

Helm comes from `helm-python-sdk` (Helm's Go SDK as a shared library, no helm binary or network needed);
Kubernetes schemas come from `kubernetes-validate` (offline JSON schemas per Kubernetes release). Both are
installed by scripts/ci-chart.sh. The same run validates examples/ against the CRDs in crds/.

Each check prints `ok` or `FAIL` with the reason; the last line is `chart: N passed, M failed` and the exit
code is non-zero when anything failed.
"""

from __future__ import annotations

import filecmp
import json
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "lockstep"
RELEASE = "lockstep"
RELEASE_NAMESPACE = "lockstep-system"
# The Kubernetes release k8s-openapi is built for (feature v1_33); kubernetes-validate ships its schemas.
KUBE_VERSION = "1.33.0"

# Values a platform team would plausibly set, all at once, far from the defaults.
NON_DEFAULT_VALUES: dict[str, Any] = {
    "replicas": 3,
    "watchNamespace": "orders",
    "logFormat": "json",
    "fastInterval": "5s",
    "idlePollStretch": 2,
    "image": {"repository": "registry.example.com/platform/lockstep", "tag": "1.2.3", "pullPolicy": "Always"},
    "webhook": {
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "host": "lockstep.apps.example.com",
            "tlsSecretName": "lockstep-tls",
            "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
        },
        "auth": {
            "existingSecret": "ado-hook-credentials",
            "usernameKey": "user",
            "passwordKey": "pass",
            "tokenKey": "header-token",
        },
    },
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "rbac": {"deployedRefNamespaces": ["flux-system", "argocd"]},
    "podAnnotations": {"example.com/team": "platform"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "platform", "effect": "NoSchedule"}],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "lockstep"}},
                    },
                }
            ]
        }
    },
}


class CheckFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# ---------------------------------------------------------------------------------------------------------
# Helm and validation helpers


def lint(values: dict[str, Any] | None) -> None:
    report = helm.lint(CHART, values, strict=True, namespace=RELEASE_NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    problems_text = [f"{m['path']}: {m['error']}" for m in problems] + list(report.get("errors") or [])
    check(not problems_text, "helm lint reported:\n    " + "\n    ".join(problems_text))


def render_raw(values: dict[str, Any] | None) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The rendered text per template and the chart's CRD files, as `helm template` produces them."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name=RELEASE, namespace=RELEASE_NAMESPACE, is_install=True)
        crds = chart.crds
    return manifests, crds


def render(values: dict[str, Any] | None) -> tuple[list[dict[str, Any]], str]:
    """Rendered objects (templates and crds/) and the NOTES.txt text."""
    manifests, crds = render_raw(values)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("__source", path)
                objects.append(doc)
    for crd in crds:
        for doc in yaml.safe_load_all(crd["data"]):
            if doc:
                doc.setdefault("__source", crd["filename"])
                objects.append(doc)
    return objects, notes


def validate_objects(objects: list[dict[str, Any]]) -> list[str]:
    """Validate against the Kubernetes schemas (strict: unknown fields fail). Returns notes on skipped kinds."""
    skipped = []
    for obj in objects:
        body = {k: v for k, v in obj.items() if k != "__source"}
        label = f"{obj['__source']}: {body.get('kind')}/{body.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(body, KUBE_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            # Custom resources such as monitoring.coreos.com/v1 ServiceMonitor: no schema ships for them.
            skipped.append(f"{label} ({body.get('apiVersion')}: no schema in kubernetes-validate, skipped)")
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            raise CheckFailed(f"{label} is invalid for Kubernetes {KUBE_VERSION} at /{path}: {e.message}") from None
    return skipped


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    check(len(found) == 1, f"expected exactly one {kind}, found {len(found)}")
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    check(len(containers) == 1, f"expected one container, found {len(containers)}")
    return containers[0]


def expect_render_error(values: dict[str, Any], needle: str) -> None:
    try:
        render(values)
    except helm.HelmError as e:
        check(needle in str(e), f"rendering failed, but the message does not mention {needle!r}: {e}")
        return
    raise CheckFailed(f"values {values} rendered, expected an error mentioning {needle!r}")


# ---------------------------------------------------------------------------------------------------------
# Property assertions shared by the cases


def assert_hardened(objects: list[dict[str, Any]]) -> None:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    check(psc.get("runAsNonRoot") is True, "pod securityContext.runAsNonRoot must be true")
    check(psc.get("runAsUser") == 65532, "pod must run as user 65532")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod seccompProfile must be RuntimeDefault")
    c = container(objects)
    sc = c["securityContext"]
    check(sc.get("readOnlyRootFilesystem") is True, "container root filesystem must be read-only")
    check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities must drop ALL")
    check(sc.get("runAsNonRoot") is True, "container runAsNonRoot must be true")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}, "liveness probe must GET /healthz on metrics")
    check(c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}, "readiness probe must GET /readyz on metrics")
    check("metrics" in ports and "webhook" in ports, f"container must expose metrics and webhook ports, has {ports}")
    for bound in ("requests", "limits"):
        check({"cpu", "memory"} <= set(c.get("resources", {}).get(bound, {})), f"resources.{bound} must set cpu and memory")
    mounts = c.get("volumeMounts", [])
    check(all(m.get("readOnly") for m in mounts), "every volume mount must be read-only")


def assert_least_privilege(objects: list[dict[str, Any]], nudged: tuple[tuple[str, str], ...] = ()) -> None:
    writable = {"create", "update", "patch", "delete", "deletecollection"}
    allowed_writes: dict[tuple[str, str], set[str]] = {
        ("lockstep.dev", "pipelinegates"): {"patch"},
        ("lockstep.dev", "servicetraces"): {"patch"},
        ("lockstep.dev", "pipelinegates/status"): {"patch"},
        ("lockstep.dev", "servicetraces/status"): {"patch"},
        ("events.k8s.io", "events"): {"create", "patch"},
        ("coordination.k8s.io", "leases"): {"get", "create", "update", "patch"},
        # Only the chart's webhook Secret (resourceNames), to store the generated password.
        ("", "secrets"): {"patch"},
    }
    # Nudging (issue 18): patch on the Flux / Argo CD kinds, only when the values enable it.
    for kind in nudged:
        allowed_writes[kind] = {"patch"}
    for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
        for rule in role["rules"]:
            check("*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"],
                  f"{role['kind']}/{role['metadata']['name']} uses a wildcard: {rule}")
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    extra = (set(rule["verbs"]) & writable) - allowed_writes.get((group, resource), set())
                    check(not extra, f"{role['kind']}/{role['metadata']['name']} may {sorted(extra)} {group or 'core'}/{resource}")
                    if (group, resource) == ("", "secrets") and set(rule["verbs"]) & writable:
                        check(role["kind"] == "Role" and role["metadata"]["namespace"] == RELEASE_NAMESPACE
                              and rule.get("resourceNames") == [f"{RELEASE}-webhook-auth"],
                              f"{role['kind']}/{role['metadata']['name']} may write Secrets beyond the webhook Secret: {rule}")
    for binding in by_kind(objects, "ClusterRoleBinding") + by_kind(objects, "RoleBinding"):
        subjects = binding["subjects"]
        check(subjects == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": RELEASE_NAMESPACE}],
              f"{binding['kind']}/{binding['metadata']['name']} must bind only the lockstep ServiceAccount: {subjects}")


def rules_grant(role: dict[str, Any], group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in role["rules"])


def assert_watch_rules(role: dict[str, Any]) -> None:
    for group, resource, verb in [
        ("lockstep.dev", "pipelinegates", "watch"),
        ("lockstep.dev", "pipelinegates", "patch"),
        ("lockstep.dev", "servicetraces", "list"),
        ("lockstep.dev", "pipelinegates/status", "patch"),
        ("lockstep.dev", "servicetraces/status", "patch"),
        ("", "secrets", "get"),
        ("events.k8s.io", "events", "create"),
        ("kustomize.toolkit.fluxcd.io", "kustomizations", "get"),
        ("argoproj.io", "applications", "watch"),
        ("apps", "deployments", "list"),
    ]:
        check(rules_grant(role, group, resource, verb),
              f"{role['kind']}/{role['metadata']['name']} does not grant {verb} on {group or 'core'}/{resource}")


def assert_crds_match_repository(objects: list[dict[str, Any]]) -> None:
    shipped = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    check(shipped == generated, f"charts/lockstep/crds has {shipped}, crds/ has {generated}")
    _, mismatch, errors = filecmp.cmpfiles(CHART / "crds", ROOT / "crds", generated, shallow=False)
    check(not mismatch and not errors, f"chart CRDs differ from crds/: {mismatch + errors}; copy crds/*.yaml into the chart")
    kinds = sorted(o["spec"]["names"]["kind"] for o in by_kind(objects, "CustomResourceDefinition"))
    check(kinds == ["PipelineGate", "ServiceTrace"], f"rendered CRDs are {kinds}")


# ---------------------------------------------------------------------------------------------------------
# Checks


def check_lint_default() -> None:
    lint(None)


def check_lint_non_default() -> None:
    lint(NON_DEFAULT_VALUES)


def check_default_render() -> list[str]:
    objects, notes = render(None)
    skipped = validate_objects(objects)
    assert_crds_match_repository(objects)
    assert_hardened(objects)
    assert_least_privilege(objects)
    kinds = sorted(o["kind"] for o in objects)
    check(kinds == sorted(["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "CustomResourceDefinition",
                           "Deployment", "Role", "RoleBinding", "Secret", "Service", "Service", "ServiceAccount"]),
          f"unexpected objects for default values: {kinds}")
    assert_watch_rules(one(objects, "ClusterRole"))
    deployment = one(objects, "Deployment")
    check(deployment["spec"]["replicas"] == 1, "default replicas must be 1")
    c = container(objects)
    args = c["args"]
    check(args[0] == "run", f"container must run `lockstep run`, args are {args}")
    check("--leader-election" not in args, "one replica must not enable leader election")
    check(not any(a.startswith("--namespace") for a in args), "default must watch all namespaces (no --namespace)")
    check("--log-format=text" in args, f"default log format must be text: {args}")
    app_version = helm.Chart.load(CHART).metadata["appVersion"]
    check(c["image"] == f"ghcr.io/lockstep-dev/lockstep:{app_version}",
          f"image must default to the release workflow's registry path and the chart's appVersion: {c['image']}")
    # No random data at render time: the chart renders the username only and lockstep generates the
    # password into the Secret on its first start.
    secret = one(objects, "Secret")
    check(set(secret["data"]) == {"username"}, f"created Secret keys: {sorted(secret['data'])}")
    check("--webhook-password-file=/etc/lockstep/webhook-auth/password" in args, f"password file flag missing: {args}")
    check("--webhook-password-secret=lockstep-webhook-auth" in args, f"password Secret flag missing: {args}")
    volume = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["secret"]
    check(volume.get("optional") is True, f"the password key appears after the first start: the volume must be optional: {volume}")
    role = one(objects, "Role")
    check(role["metadata"]["namespace"] == RELEASE_NAMESPACE and role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["lockstep-webhook-auth"], "verbs": ["get", "patch"]}],
          f"webhook Secret Role: {role}")
    check(not any(a.startswith("--webhook-token-file") for a in args), "no token configured, no token flag expected")
    env = {e["name"]: e for e in c["env"]}
    check(env["LOCKSTEP_WEBHOOK_USERNAME"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"],
          "username must come from the webhook Secret")
    check(env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", "POD_NAMESPACE from the downward API")
    check("port-forward svc/lockstep-webhook 9292:9292" in notes, "NOTES must show the port-forward command")
    check("/hooks/azure-devops" in notes and "kubectl get pgate" in notes, "NOTES must name the webhook path and next steps")
    check("jsonpath='{.data.password}'" in notes, "NOTES must tell how to read the webhook password")
    check("first start" in notes and "existingSecret" in notes, "NOTES must say when the password exists and offer existingSecret")
    return skipped


def check_non_default_render() -> list[str]:
    objects, notes = render(NON_DEFAULT_VALUES)
    skipped = validate_objects(objects)
    assert_hardened(objects)
    assert_least_privilege(objects)
    check(not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding"),
          "watchNamespace set: no cluster-wide RBAC expected")
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(objects, "Role")}
    check(("orders", "lockstep") in roles, f"a Role in the watched namespace is expected, found {sorted(roles)}")
    assert_watch_rules(roles[("orders", "lockstep")])
    for ns in ("flux-system", "argocd"):
        role = roles.get((ns, "lockstep-deployed-refs"))
        check(role is not None, f"read-only Role in {ns} expected, found {sorted(roles)}")
        check(all(set(r["verbs"]) == {"get", "list", "watch"} for r in role["rules"]), f"Role in {ns} must be read-only without nudging")
    lease_role = roles.get((RELEASE_NAMESPACE, "lockstep-leader-election"))
    check(lease_role is not None and rules_grant(lease_role, "coordination.k8s.io", "leases", "update"),
          "leader election needs a Lease Role in the release namespace")
    bindings = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in by_kind(objects, "RoleBinding")}
    check(bindings == set(roles), f"every Role needs its RoleBinding: roles {sorted(roles)}, bindings {sorted(bindings)}")
    check(one(objects, "Deployment")["spec"]["replicas"] == 3, "replicas must be 3")
    c = container(objects)
    args = c["args"]
    for expected in ["--leader-election", "--lease-name=lockstep-leader", "--lease-namespace=$(POD_NAMESPACE)",
                     "--namespace=orders", "--log-format=json", "--fast-interval=5s", "--idle-poll-stretch=2",
                     "--webhook-password-file=/etc/lockstep/webhook-auth/password",
                     "--webhook-token-file=/etc/lockstep/webhook-auth/token", "--webhook-token-header=X-Lockstep-Token"]:
        check(expected in args, f"missing {expected} in {args}")
    check(c["image"] == "registry.example.com/platform/lockstep:1.2.3", f"image: {c['image']}")
    check(not by_kind(objects, "Secret"), "existingSecret set: the chart must not create a Secret")
    volume = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["secret"]
    check(volume["secretName"] == "ado-hook-credentials", f"credentials volume: {volume}")
    check(volume["items"] == [{"key": "pass", "path": "password"}, {"key": "header-token", "path": "token"}],
          f"credential keys: {volume['items']}")
    env = {e["name"]: e for e in c["env"]}
    check(env["LOCKSTEP_WEBHOOK_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "ado-hook-credentials", "key": "user"},
          "username must come from the existing Secret's key")
    pdb = one(objects, "PodDisruptionBudget")
    check(pdb["spec"]["minAvailable"] == 1, "PDB must keep one pod")
    ingress = one(objects, "Ingress")
    rule = ingress["spec"]["rules"][0]
    check(rule["host"] == "lockstep.apps.example.com", f"ingress host: {rule['host']}")
    check(rule["http"]["paths"][0]["backend"]["service"]["name"] == "lockstep-webhook", "ingress must route to the webhook Service")
    check(ingress["spec"]["tls"][0]["secretName"] == "lockstep-tls", "ingress TLS secret")
    monitor = one(objects, "ServiceMonitor")
    check(monitor["metadata"]["labels"].get("release") == "prometheus", "ServiceMonitor labels")
    check(monitor["spec"]["endpoints"][0]["port"] == "metrics", "ServiceMonitor must scrape the metrics port")
    pod = one(objects, "Deployment")["spec"]["template"]
    check(pod["metadata"]["annotations"].get("example.com/team") == "platform", "podAnnotations")
    check(pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}, "nodeSelector")
    check(pod["spec"]["tolerations"][0]["key"] == "dedicated", "tolerations")
    check("podAntiAffinity" in pod["spec"]["affinity"], "affinity")
    check("https://lockstep.apps.example.com/hooks/azure-devops" in notes, "NOTES must show the Ingress webhook URL")
    check("X-Lockstep-Token:<token>" in notes, "NOTES must explain the header token")
    return skipped


def check_leader_election_threshold() -> None:
    for replicas, expected in [(1, False), (2, True)]:
        objects, _ = render({"replicas": replicas})
        args = container(objects)["args"]
        check(("--leader-election" in args) == expected, f"replicas={replicas}: leader election {'expected' if expected else 'unexpected'}: {args}")
        check(bool(by_kind(objects, "PodDisruptionBudget")) == expected, f"replicas={replicas}: PDB presence")
        lease_roles = [r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith("leader-election")]
        check(bool(lease_roles) == expected, f"replicas={replicas}: Lease Role presence")


def check_schema_rejects_wrong_types() -> None:
    bad_values = [
        {"replicas": "three"},
        {"replicas": 0},
        {"logFormat": "yaml"},
        {"watchNamespace": 5},
        {"watchNamespace": "Not_A_Namespace"},
        {"webhook": {"ingress": {"enabled": "yes"}}},
        {"webhook": {"auth": {"password": 1234}}},
        {"metrics": {"serviceMonitor": {"interval": "often"}}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"replica": 3},  # a typo of replicas must not be silently ignored
    ]
    with helm.Chart.load(CHART) as chart:
        for values in bad_values:
            try:
                chart.validate_schema(values)
            except helm.HelmValuesError:
                continue
            raise CheckFailed(f"values.schema.json accepted {values}")
    # And lint, which is what `helm install` users see, reports it as an error too.
    report = helm.lint(CHART, {"replicas": "three"}, namespace=RELEASE_NAMESPACE)
    errors = [m for m in report["messages"] if m["severity"] == 3] + list(report.get("errors") or [])
    check(bool(errors), "helm lint accepted replicas: three")


def check_webhook_auth_guards() -> None:
    expect_render_error({"webhook": {"auth": {"existingSecret": "x", "usernameKey": "", "passwordKey": "", "tokenKey": ""}}},
                        "configure a password or a token")
    expect_render_error({"webhook": {"auth": {"existingSecret": "x", "passwordKey": "", "tokenKey": "t"}}},
                        "a username needs a password")
    # lockstep refuses a password without a username (--webhook-password-file needs --webhook-username).
    expect_render_error({"webhook": {"auth": {"username": ""}}}, "a password needs a username")
    expect_render_error({"webhook": {"auth": {"existingSecret": "x", "usernameKey": "", "tokenKey": "t"}}},
                        "a password needs a username")
    objects, _ = render({"webhook": {"auth": {"password": "s3cret-from-values", "token": "tok"}}})
    secret = one(objects, "Secret")
    check(set(secret["data"]) == {"username", "password", "token"}, f"created Secret keys: {sorted(secret['data'])}")
    args = container(objects)["args"]
    check("--webhook-token-file=/etc/lockstep/webhook-auth/token" in args, f"token flag expected: {args}")
    check(not any(a.startswith("--webhook-password-secret") for a in args), f"a given password is not generated: {args}")
    check(not by_kind(objects, "Role"), "a given password needs no Secret write access")
    validate_objects(objects)


def check_workload_identity() -> None:
    """workloadIdentity.enabled: the pod label the webhook selects on and the service-account annotations."""
    objects, _ = render(None)
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    check("azure.workload.identity/use" not in pod_labels, f"label without workloadIdentity: {pod_labels}")
    objects, _ = render({"workloadIdentity": {"enabled": True, "clientId": "0a1b-client", "tenantId": "7d3c-tenant"}})
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    check(pod_labels.get("azure.workload.identity/use") == "true", f"pod labels: {pod_labels}")
    annotations = one(objects, "ServiceAccount")["metadata"].get("annotations", {})
    check(annotations.get("azure.workload.identity/client-id") == "0a1b-client", f"annotations: {annotations}")
    check(annotations.get("azure.workload.identity/tenant-id") == "7d3c-tenant", f"annotations: {annotations}")
    validate_objects(objects)
    expect_render_error({"workloadIdentity": {"enabled": True}}, "needs workloadIdentity.clientId")


def check_api_render() -> None:
    """The read API (docs/api.md): a Service, the flags and the static token's Secret, TokenReview and
    SubjectAccessReview rights (system:auth-delegator) for the ServiceAccount; nothing of it by default."""
    objects, _ = render(None)
    check(not [s for s in by_kind(objects, "Service") if s["metadata"]["name"] == "lockstep-api"],
          "the API must be off by default")
    check(not any(a.startswith("--api-") for a in container(objects)["args"]), "no --api flags by default")
    objects, _ = render({"api": {"enabled": True, "tokenSecret": {"name": "lockstep-api-token"}}})
    validate_objects(objects)
    assert_hardened(objects)
    service = [s for s in by_kind(objects, "Service") if s["metadata"]["name"] == "lockstep-api"]
    check(len(service) == 1 and service[0]["spec"]["ports"][0]["targetPort"] == "api", f"API Service: {service}")
    c = container(objects)
    for expected in ["--api-addr=0.0.0.0:8081", "--api-token-file=/etc/lockstep/api/token"]:
        check(expected in c["args"], f"missing {expected} in {c['args']}")
    check({"name": "api", "containerPort": 8081, "protocol": "TCP"} in c["ports"], f"API port: {c['ports']}")
    volumes = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    token = [v for v in volumes if v["name"] == "api-token"]
    check(len(token) == 1 and token[0]["secret"]["secretName"] == "lockstep-api-token"
          and token[0]["secret"]["items"] == [{"key": "token", "path": "token"}], f"token volume: {token}")
    objects_np, _ = render({"api": {"enabled": True}, "networkPolicy": {"enabled": True}})
    ports = [p["port"] for p in one(objects_np, "NetworkPolicy")["spec"]["ingress"][0]["ports"]]
    check("api" in ports, f"the NetworkPolicy must admit the API port when it is on: {ports}")
    delegator = [b for b in by_kind(objects, "ClusterRoleBinding") if b["roleRef"]["name"] == "system:auth-delegator"]
    check(len(delegator) == 1 and delegator[0]["subjects"][0]["name"] == "lockstep",
          f"the ServiceAccount needs system:auth-delegator for TokenReviews: {delegator}")


def check_examples_validate() -> list[str]:
    """examples/ are what users copy: validate them against our CRDs and the Kubernetes schemas."""
    crd_schemas = {}
    for path in (ROOT / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            crd_schemas[key] = version["schema"]["openAPIV3Schema"]
    notes = []
    seen = set()
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            rel = path.relative_to(ROOT)
            key = (doc.get("apiVersion"), doc.get("kind"))
            label = f"{rel}: {key[1]}/{doc.get('metadata', {}).get('name')}"
            if key in crd_schemas:
                seen.add(key[1])
                try:
                    jsonschema.Draft7Validator(crd_schemas[key]).validate(doc)
                except jsonschema.ValidationError as e:
                    raise CheckFailed(f"{label} does not match the CRD at /{'/'.join(map(str, e.path))}: {e.message}") from None
                continue
            try:
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                notes.append(f"{label} ({key[0]}: no schema available, skipped)")
            except kubernetes_validate.ValidationError as e:
                raise CheckFailed(f"{label} is invalid at /{'/'.join(map(str, e.path))}: {e.message}") from None
    check(seen == {"PipelineGate", "ServiceTrace"}, f"examples should show both kinds, found {sorted(seen)}")
    return notes


def check_renders_are_identical() -> None:
    """Argo CD renders with `helm template` on every refresh: any difference is drift, and a sync that rolls
    the pods. Nothing random or cluster-dependent may be in a default render."""
    first, _ = render_raw(None)
    second, _ = render_raw(None)
    check(first == second, "two renders with default values differ: " + ", ".join(
        sorted(k for k in set(first) | set(second) if first.get(k) != second.get(k))))
    for path in sorted((CHART / "templates").glob("*")):
        text = path.read_text()
        for forbidden in ("lookup", "randAlpha", "randAscii", "randNumeric", "uuidv4", "now", "genCA", "genPrivateKey"):
            check(not re.search(rf"\b{forbidden}\b", text), f"{path.name} uses {forbidden}: renders must be reproducible")


def check_optional_objects() -> list[str]:
    values = {
        "commonLabels": {"team": "platform", "cost-center": "42"},
        "networkPolicy": {"enabled": True, "ingressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
                          "apiServerCIDRs": ["10.0.0.1/32"]},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
        "grafanaDashboard": {"enabled": True, "folder": "Platform"},
    }
    objects, _ = render(values)
    skipped = validate_objects(objects)
    for obj in objects:
        if obj["kind"] != "CustomResourceDefinition":
            labels = obj["metadata"].get("labels", {})
            check(labels.get("team") == "platform" and labels.get("cost-center") == "42",
                  f"commonLabels missing on {obj['kind']}/{obj['metadata']['name']}: {labels}")
    policy = one(objects, "NetworkPolicy")["spec"]
    check(policy["policyTypes"] == ["Ingress", "Egress"], f"policyTypes: {policy['policyTypes']}")
    check(len(policy["ingress"]) == 1 and {p["port"] for p in policy["ingress"][0]["ports"]} == {"webhook", "metrics"},
          f"ingress must allow only the webhook and metrics ports: {policy['ingress']}")
    egress_ports = [sorted(p["port"] for p in rule["ports"]) for rule in policy["egress"]]
    check(egress_ports == [[53, 53], [443, 6443], [443]], f"egress must be DNS, the API server and HTTPS: {egress_ports}")
    check(policy["egress"][1]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}], f"API server CIDRs: {policy['egress'][1]}")
    rule = one(objects, "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    readme = (ROOT / "README.md").read_text()
    for metric in ("lockstep_reconciles_total", "lockstep_ado_requests_total", "lockstep_webhook_polling_found_first_total"):
        check(any(metric in e for e in alerts.values()) and metric in readme, f"no alert on {metric}")
    check(all(f'namespace="{RELEASE_NAMESPACE}"' in e for e in alerts.values()), f"alerts must select the release: {alerts}")
    check(rule["metadata"]["labels"].get("release") == "prometheus", "PrometheusRule labels")
    dashboard = one(objects, "ConfigMap")
    check(dashboard["metadata"]["labels"].get("grafana_dashboard") == "1", "the Grafana sidecar label is missing")
    board = json.loads(dashboard["data"]["lockstep.json"])
    documented = set(re.findall(r"`(lockstep_[a-z_]+)`", readme))
    used = {m for p in board["panels"] for t in p["targets"] for m in re.findall(r"lockstep_[a-z_]+", t["expr"])}
    bare = {re.sub(r"_(bucket|sum|count)$", "", m) for m in used}
    check(bare <= documented, f"dashboard queries metrics the README does not document: {sorted(bare - documented)}")
    check(documented <= bare, f"exported metrics without a dashboard panel: {sorted(documented - bare)}")
    return skipped


def check_chart_metadata() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    check(meta.get("icon", "").startswith("https://"), "Chart.yaml needs an icon URL")
    icon = ROOT / "docs" / "images" / Path(meta["icon"]).name
    check(icon.is_file(), f"the icon {icon} must exist in the repository")
    annotations = meta.get("annotations", {})
    for key in ("artifacthub.io/license", "artifacthub.io/images", "artifacthub.io/crds", "artifacthub.io/links"):
        check(key in annotations, f"Chart.yaml lacks the Artifact Hub annotation {key}")
    images = yaml.safe_load(annotations["artifacthub.io/images"])
    check(images[0]["image"] == f"ghcr.io/lockstep-dev/lockstep:{meta['appVersion']}",
          f"artifacthub.io/images must name the appVersion image: {images}")


FLUX = ("kustomize.toolkit.fluxcd.io", "kustomizations")
ARGO = ("argoproj.io", "applications")


def check_nudge_rbac() -> None:
    """patch on Kustomizations / Applications exactly when nudge.flux / nudge.argocd; flags follow."""
    objects, _ = render(None)
    for group, resource in (FLUX, ARGO):
        check(not rules_grant(one(objects, "ClusterRole"), group, resource, "patch"),
              f"default values must not grant patch on {resource}")
    args = container(objects)["args"]
    check("--nudge-flux=false" in args and "--nudge-argocd=false" in args and "--nudge-default" not in args,
          f"default nudge flags: {args}")
    objects, _ = render({"nudge": {"default": True, "flux": True}})
    assert_least_privilege(objects, nudged=(FLUX,))
    role = one(objects, "ClusterRole")
    check(rules_grant(role, *FLUX, "patch") and not rules_grant(role, *ARGO, "patch"),
          "nudge.flux alone grants patch on kustomizations only")
    args = container(objects)["args"]
    check("--nudge-default" in args and "--nudge-flux=true" in args and "--nudge-argocd=false" in args,
          f"nudge flags: {args}")
    # One watched namespace: Argo CD's Applications live elsewhere, so the patch goes with the read Role there.
    objects, _ = render({"watchNamespace": "orders", "rbac": {"deployedRefNamespaces": ["argocd"]},
                         "nudge": {"argocd": True, "argocdNamespace": "argocd"},
                         "webhook": {"allowedSubscriptions": ["4f6e6328-0251-4814-a009-c01dfa368e3f"]}})
    assert_least_privilege(objects, nudged=(ARGO,))
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(objects, "Role")}
    check(rules_grant(roles[("argocd", "lockstep-deployed-refs")], *ARGO, "patch"),
          "nudge.argocd grants patch on applications in the deployed-ref namespaces")
    check(not rules_grant(roles[("argocd", "lockstep-deployed-refs")], *FLUX, "patch"), "no Flux patch without nudge.flux")
    args = container(objects)["args"]
    check("--webhook-allowed-subscriptions=4f6e6328-0251-4814-a009-c01dfa368e3f" in args, f"allowlist flag: {args}")
    expect_render_error({"webhook": {"allowedSubscriptions": ["not-a-guid"]}}, "allowedSubscriptions")


def check_hooks_sync() -> None:
    """--hooks-sync only with hooks.sync.enabled, which needs hookHealth.url; no RBAC change."""
    objects, _ = render(None)
    args = container(objects)["args"]
    check(not any(a.startswith("--hooks-sync") for a in args), f"hook set-up is off by default: {args}")
    default_role = one(objects, "ClusterRole")
    url = "https://lockstep.example.com/hooks/azure-devops"
    objects, _ = render({"hookHealth": {"url": url}, "hooks": {"sync": {"enabled": True, "interval": "15m"}}})
    args = container(objects)["args"]
    check("--hooks-sync" in args and "--hooks-sync-interval=15m" in args and f"--hooks-url={url}" in args,
          f"hook set-up flags: {args}")
    check(one(objects, "ClusterRole") == default_role, "the hook set-up needs no extra RBAC")
    expect_render_error({"hooks": {"sync": {"enabled": True}}}, "hookHealth.url")


def check_sharding() -> list[str]:
    """sharding.shards: one Deployment, two Services, a PDB and a Lease per shard beside the main instance,
    selectors that never overlap, RBAC shared, and bad shard names refused."""
    objects, notes = render({"replicas": 2, "sharding": {"shards": ["a", "team-b"]},
                             "networkPolicy": {"enabled": True}, "api": {"enabled": True},
                             "hookHealth": {"url": "https://lockstep.example.com/hooks/azure-devops"}})
    skipped = validate_objects(objects)
    deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
    check(set(deployments) == {"lockstep", "lockstep-shard-a", "lockstep-shard-team-b"},
          f"Deployments: {sorted(deployments)}")
    selectors = {}
    for name, d in deployments.items():
        sel = d["spec"]["selector"]["matchLabels"]
        check(sel == d["spec"]["template"]["metadata"]["labels"] | sel, f"{name}: pod labels lack its selector")
        selectors[name] = sel
        args = d["spec"]["template"]["spec"]["containers"][0]["args"]
        shard = name.removeprefix("lockstep-shard-") if name != "lockstep" else None
        lease = "lockstep-leader" + (f"-shard-{shard}" if shard else "")
        check(f"--lease-name={lease}" in args, f"{name}: Lease flag: {args}")
        check(("--shard=" + shard in args) if shard else not any(a.startswith("--shard") for a in args),
              f"{name}: shard flag: {args}")
        # The read API and hookHealth.url belong to the main instance only.
        check(any(a.startswith("--api-addr") for a in args) == (shard is None), f"{name}: API flags: {args}")
        check(any(a.startswith("--hooks-url") for a in args) == (shard is None), f"{name}: hooks URL: {args}")
    check(selectors["lockstep"] == {"app.kubernetes.io/name": "lockstep", "app.kubernetes.io/instance": "lockstep"},
          f"the main Deployment's selector must not change (it is immutable): {selectors['lockstep']}")
    # No Deployment's selector matches another's pods.
    for name, sel in selectors.items():
        for other, d in deployments.items():
            labels = d["spec"]["template"]["metadata"]["labels"]
            matches = all(labels.get(k) == v for k, v in sel.items())
            check(matches == (name == other), f"{name}'s selector {'misses' if name == other else 'matches'} {other}'s pods")
    services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
    for name, sel in selectors.items():
        for suffix in ("webhook", "metrics"):
            svc = services.get(f"{name}-{suffix}")
            check(svc is not None, f"no Service {name}-{suffix}: {sorted(services)}")
            check(svc["spec"]["selector"] == sel, f"{name}-{suffix} selects {svc['spec']['selector']}, not {sel}")
            # The ServiceMonitor selects Services by the main selector labels: every instance is scraped.
            check(all(svc["metadata"]["labels"].get(k) == v for k, v in selectors["lockstep"].items()),
                  f"{name}-{suffix} lacks the labels the ServiceMonitor selects")
    pdbs = {p["metadata"]["name"]: p["spec"]["selector"]["matchLabels"] for p in by_kind(objects, "PodDisruptionBudget")}
    check(pdbs == selectors, f"PDBs {pdbs} do not match the Deployments {selectors}")
    check(len(by_kind(objects, "ClusterRole")) == 1 and len(by_kind(objects, "ServiceAccount")) == 1,
          "RBAC and the service account are shared by every instance")
    policy = one(objects, "NetworkPolicy")["spec"]["podSelector"]
    instances = set(policy["matchExpressions"][0]["values"])
    check(instances == {sel["app.kubernetes.io/instance"] for sel in selectors.values()},
          f"NetworkPolicy covers {instances}")
    check("lockstep-shard-team-b-webhook" in notes and "lockstep-leader-shard-a" in notes, f"NOTES:\n{notes}")
    # Without shards nothing changes: one Deployment, its two Services.
    objects, _ = render(None)
    check(len(by_kind(objects, "Deployment")) == 1 and len(by_kind(objects, "Service")) == 2, "default render")
    with helm.Chart.load(CHART) as chart:
        for bad in (["A"], ["a_b"], ["a", "a"], ["x" * 21]):
            try:
                chart.validate_schema({"sharding": {"shards": bad}})
            except helm.HelmValuesError:
                continue
            raise CheckFailed(f"values.schema.json accepted shards {bad}")
    expect_render_error({"fullnameOverride": "x" * 40, "sharding": {"shards": ["abcdefghijklmn"]}}, "longer than 52")
    return skipped


CHECKS: list[tuple[str, Callable[[], Any]]] = [
    ("helm lint, default values", check_lint_default),
    ("helm lint, non-default values", check_lint_non_default),
    ("render + validate, default values", check_default_render),
    ("render + validate, non-default values", check_non_default_render),
    ("leader election and PDB iff replicas > 1", check_leader_election_threshold),
    ("values.schema.json rejects wrong types", check_schema_rejects_wrong_types),
    ("webhook credential guards", check_webhook_auth_guards),
    ("workload identity label and annotations", check_workload_identity),
    ("read API: off by default; Service, flags, token, auth-delegator when on", check_api_render),
    ("two default renders are byte-identical (GitOps)", check_renders_are_identical),
    ("optional NetworkPolicy, PrometheusRule, dashboard, commonLabels", check_optional_objects),
    ("Chart.yaml icon and Artifact Hub annotations", check_chart_metadata),
    ("examples/ match the CRDs and Kubernetes schemas", check_examples_validate),
    ("nudge RBAC and flags follow the values", check_nudge_rbac),
    ("hook set-up: off by default, flags and URL guard when on", check_hooks_sync),
    ("sharding: a Deployment, Services, PDB and Lease per shard; selectors disjoint", check_sharding),
]


def main() -> int:
    print(f"helm SDK {helm.helm_sdk_version()}, kubernetes-validate schemas for Kubernetes {KUBE_VERSION}")
    passed = failed = 0
    for name, fn in CHECKS:
        try:
            notes = fn()
        except CheckFailed as e:
            failed += 1
            print(f"FAIL {name}: {e}")
            continue
        except Exception:  # a crash in a check is a failure of that check, not of the whole run
            failed += 1
            print(f"FAIL {name}: unexpected error\n{traceback.format_exc()}")
            continue
        passed += 1
        print(f"ok   {name}")
        for note in notes or []:
            print(f"     note: {note}")
    print(f"chart: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
