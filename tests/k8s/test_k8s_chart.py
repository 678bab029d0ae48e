"""The Helm chart: lint, render with every switch, validate each object strictly."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from _helm import run_helm
from _k8s_testing import K8S_MIN_VERSION, REPO_ROOT, load_all, validate_strict
from _prom_operator import KINDS as MONITORING_KINDS
from _prom_operator import monitoring_errors

from ematix_flow._k8s.crd import build_crd

pytestmark = pytest.mark.k8s

CHART = REPO_ROOT / "charts" / "ematix-flow-operator"
NAMESPACE = "ematix-system"

ALL_ON: dict[str, Any] = {
    "image": {"repository": "registry.example/ematix-flow", "tag": "1.2.3", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "pipelineImage": {"repository": "registry.example/team-pipelines", "tag": "7"},
    "watchNamespaces": ["data", "analytics"],
    "operator": {
        "logFormat": "plain",
        "recheckInterval": 30,
        "healthPort": 9090,
        "extraArgs": ["--verbose"],
        "extraEnv": [{"name": "TZ", "value": "UTC"}],
    },
    "crds": {"create": True},
    "serviceAccount": {
        "create": True,
        "name": "flow-operator",
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"},
    },
    "rbac": {"create": True},
    "podAnnotations": {"prometheus.io/scrape": "false"},
    "podLabels": {"team": "data"},
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}
                ]
            }
        }
    },
    "priorityClassName": "system-cluster-critical",
    "metrics": {
        "enabled": True,
        "port": 9091,
        "service": {"create": True, "annotations": {"prometheus.io/scrape": "true"}},
        "serviceMonitor": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "interval": "15s",
            "scrapeTimeout": "10s",
            "relabelings": [{"targetLabel": "cluster", "replacement": "eu-1"}],
            "metricRelabelings": [
                {"sourceLabels": ["__name__"], "regex": "go_.*", "action": "drop"}
            ],
        },
        "podMonitor": {"enabled": False},
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "failingThreshold": 2,
            "overdueGraceSeconds": 1800,
            "notReadyFor": "5m",
            "operatorDownFor": "2m",
            "severity": "page",
            "operatorDownSeverity": "page",
            "runbookBaseUrl": "https://wiki.example/ematix-flow",
            "disabled": [],
        },
        "dashboard": {
            "enabled": True,
            "labels": {"grafana_dashboard": "1"},
            "annotations": {"grafana_folder": "Data"},
            "namespace": "monitoring",
        },
    },
}
ALL_OFF: dict[str, Any] = {
    "crds": {"create": False},
    "serviceAccount": {"create": False, "name": "existing-sa"},
    "rbac": {"create": False},
    "metrics": {"enabled": False},
}
#: Monitoring through a PodMonitor instead of the Service and ServiceMonitor.
POD_MONITOR: dict[str, Any] = {
    "metrics": {
        "service": {"create": False},
        "podMonitor": {"enabled": True, "labels": {"release": "prom"}, "interval": "1m"},
        "prometheusRule": {"enabled": True},
    }
}


def _values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _template(helm: Path, *args: str) -> list[dict[str, Any]]:
    result = run_helm(helm, "template", "flow", str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    return load_all(result.stdout)


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        out.setdefault(doc["kind"], []).append(doc)
    return out


def _deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = _by_kind(docs)["Deployment"]
    return deployment


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _deployment(docs)["spec"]["template"]["spec"]["containers"]
    return container


def test_helm_lint_strict_passes(helm: Path, tmp_path: Path) -> None:
    for values in ({}, ALL_ON, ALL_OFF):
        result = run_helm(
            helm, "lint", "--strict", str(CHART), "-f", _values_file(tmp_path, values)
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    "values",
    [{}, ALL_ON, ALL_OFF, POD_MONITOR],
    ids=["defaults", "all-on", "all-off", "pod-monitor"],
)
def test_every_rendered_object_validates_strictly(
    helm: Path, tmp_path: Path, values: dict[str, Any]
) -> None:
    """Built-in kinds against the official schemas; the Prometheus Operator's kinds
    against its published schemas (see ``_prom_operator``)."""
    docs = _template(helm, "-f", _values_file(tmp_path, values))
    assert docs
    monitoring = [d for d in docs if d["apiVersion"] == "monitoring.coreos.com/v1"]
    for doc in docs:
        if doc not in monitoring:
            validate_strict(doc)
    assert {d["kind"] for d in monitoring} <= set(MONITORING_KINDS)
    assert monitoring_errors(monitoring) == []


def test_monitoring_schemas_catch_a_broken_object(helm: Path, tmp_path: Path) -> None:
    """The schema check is not vacuous."""
    docs = _by_kind(_template(helm, "-f", _values_file(tmp_path, ALL_ON)))
    (monitor,) = docs["ServiceMonitor"]
    (rule,) = docs["PrometheusRule"]
    monitor["spec"]["endpoints"][0]["interval"] = 30
    rule["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    errors = monitoring_errors([monitor, rule])
    assert len(errors) == 2
    assert "interval must be string" in errors[0]
    assert "for must match pattern" in errors[1]


def test_chart_requires_the_oldest_version_the_manifests_are_validated_for(helm: Path) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={K8S_MIN_VERSION}.0-0"
    major, minor = (int(x) for x in K8S_MIN_VERSION.split("."))
    older = run_helm(helm, "template", "flow", str(CHART), "--kube-version", f"{major}.{minor - 1}")
    assert older.returncode != 0
    assert "kubeVersion" in older.stderr or "incompatible" in older.stderr
    assert _template(helm, "--kube-version", K8S_MIN_VERSION)


def test_defaults_install_everything_cluster_wide(helm: Path) -> None:
    kinds = _by_kind(_template(helm))
    assert sorted(kinds) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    args = _container(_template(helm))["args"]
    assert "--all-namespaces" in args
    assert not any(a.startswith("--namespace") for a in args)
    (role,) = kinds["ClusterRole"]
    assert any("cronjobs" in r["resources"] for r in role["rules"])


def test_crd_is_the_generated_one_and_kept_on_uninstall(helm: Path) -> None:
    (crd,) = _by_kind(_template(helm))["CustomResourceDefinition"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert crd["spec"] == build_crd()["spec"]


def test_all_on_limits_rbac_to_the_watched_namespaces(helm: Path, tmp_path: Path) -> None:
    docs = _template(helm, "-f", _values_file(tmp_path, ALL_ON))
    kinds = _by_kind(docs)
    assert sorted(r["metadata"]["namespace"] for r in kinds["Role"]) == ["analytics", "data"]
    assert sorted(b["metadata"]["namespace"] for b in kinds["RoleBinding"]) == [
        "analytics",
        "data",
    ]
    for binding in kinds["RoleBinding"] + kinds["ClusterRoleBinding"]:
        (subject,) = binding["subjects"]
        assert subject == {
            "kind": "ServiceAccount",
            "name": "flow-operator",
            "namespace": NAMESPACE,
        }
    (cluster_role,) = kinds["ClusterRole"]
    cluster_resources = {res for rule in cluster_role["rules"] for res in rule["resources"]}
    assert cluster_resources == {"customresourcedefinitions", "namespaces"}
    for rule in cluster_role["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
    args = _container(docs)["args"]
    assert "--namespace=data" in args and "--namespace=analytics" in args
    assert "--all-namespaces" not in args
    assert args[-1] == "--verbose"


def test_all_on_deployment_carries_every_option(helm: Path, tmp_path: Path) -> None:
    docs = _template(helm, "-f", _values_file(tmp_path, ALL_ON))
    pod = _deployment(docs)["spec"]["template"]
    container = _container(docs)
    assert container["image"] == "registry.example/ematix-flow:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    env = {e["name"]: e for e in container["env"]}
    assert env["EMATIX_FLOW_OPERATOR_DEFAULT_IMAGE"]["value"] == "registry.example/team-pipelines:7"
    assert env["TZ"]["value"] == "UTC"
    assert "--liveness=http://0.0.0.0:9090/healthz" in container["args"]
    assert "--log-format=plain" in container["args"]
    assert "--recheck-interval=30" in container["args"]
    assert container["ports"][0]["containerPort"] == 9090
    assert "--metrics=http://0.0.0.0:9091/metrics" in container["args"]
    assert {"name": "metrics", "containerPort": 9091, "protocol": "TCP"} in container["ports"]
    assert container["resources"]["limits"] == {"memory": "512Mi"}
    assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "false"}
    assert pod["metadata"]["labels"]["team"] == "data"
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "flow-operator"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"] == ALL_ON["tolerations"]
    assert spec["affinity"] == ALL_ON["affinity"]
    (sa,) = _by_kind(docs)["ServiceAccount"]
    assert sa["metadata"]["annotations"] == ALL_ON["serviceAccount"]["annotations"]


def test_all_off_renders_only_the_deployment(helm: Path, tmp_path: Path) -> None:
    docs = _template(helm, "-f", _values_file(tmp_path, ALL_OFF))
    assert [d["kind"] for d in docs] == ["Deployment"]
    assert _deployment(docs)["spec"]["template"]["spec"]["serviceAccountName"] == "existing-sa"
    env = {e["name"] for e in _container(docs)["env"]}
    assert "EMATIX_FLOW_OPERATOR_DEFAULT_IMAGE" not in env
    assert "--metrics=off" in _container(docs)["args"]
    assert [p["name"] for p in _container(docs)["ports"]] == ["health"]


def test_metrics_service_and_monitors_select_the_operator(helm: Path, tmp_path: Path) -> None:
    rendered = _template(helm, "-f", _values_file(tmp_path, ALL_ON))
    docs = _by_kind(rendered)
    pod_labels = _deployment(rendered)["spec"]["template"]["metadata"]["labels"]
    (service,) = docs["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9091, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}
    (monitor,) = docs["ServiceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {
        "port": "metrics",
        "path": "/metrics",
        "interval": "15s",
        "scrapeTimeout": "10s",
        "relabelings": ALL_ON["metrics"]["serviceMonitor"]["relabelings"],
        "metricRelabelings": ALL_ON["metrics"]["serviceMonitor"]["metricRelabelings"],
    }
    assert "PodMonitor" not in docs

    pods = _by_kind(_template(helm, "-f", _values_file(tmp_path, POD_MONITOR)))
    assert "Service" not in pods and "ServiceMonitor" not in pods
    (pod_monitor,) = pods["PodMonitor"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_monitor["spec"]["podMetricsEndpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "1m"}
    ]


def test_dashboard_configmap_carries_the_dashboard(helm: Path, tmp_path: Path) -> None:
    (configmap,) = _by_kind(_template(helm, "-f", _values_file(tmp_path, ALL_ON)))["ConfigMap"]
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Data"}
    shipped = (CHART / "dashboards" / "ematix-flow.json").read_text()
    assert json.loads(configmap["data"]["ematix-flow.json"]) == json.loads(shipped)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true"],
            "enable one of them",
        ),
        (
            ["metrics.serviceMonitor.enabled=true", "metrics.service.create=false"],
            "needs metrics.service.create",
        ),
        (["metrics.port=8080"], "are the same port"),
    ],
)
def test_monitoring_values_that_cannot_work_are_refused(
    helm: Path, sets: list[str], message: str
) -> None:
    args = [a for s in sets for a in ("--set", s)]
    result = run_helm(helm, "template", "flow", str(CHART), *args)
    assert result.returncode != 0
    assert message in result.stderr


def test_operator_pod_is_non_root_restricted_and_probed(helm: Path) -> None:
    docs = _template(helm)
    deployment = _deployment(docs)
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    container = _container(docs)
    assert container["command"] == ["ematix-flow-operator"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    (liveness,) = [a for a in container["args"] if a.startswith("--liveness=")]
    port = int(re.search(r":(\d+)/healthz$", liveness).group(1))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] == "/healthz"
        assert ports[http["port"]] == port
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_rbac_never_grants_secrets_or_wildcards(helm: Path, tmp_path: Path) -> None:
    for values in ({}, ALL_ON):
        docs = _template(helm, "-f", _values_file(tmp_path, values))
        for doc in docs:
            for rule in doc.get("rules", []):
                assert "secrets" not in rule["resources"], doc["kind"]
                assert "*" not in rule["resources"] + rule["verbs"] + rule["apiGroups"]


def test_operator_rules_cover_what_it_does(helm: Path) -> None:
    (role,) = _by_kind(_template(helm))["ClusterRole"]

    def allowed(group: str, resource: str, verb: str) -> bool:
        return any(
            group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
            for r in role["rules"]
        )

    for resource, verbs in {
        "emtxpipelines": ("get", "list", "watch", "patch"),
        "emtxpipelines/status": ("get", "patch"),
    }.items():
        for verb in verbs:
            assert allowed("ematix.io", resource, verb), (resource, verb)
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
        assert allowed("batch", "cronjobs", verb), verb
    for verb in ("get", "list", "watch"):
        assert allowed("batch", "jobs", verb) and allowed("", "pods", verb)
    assert allowed("", "events", "create")


@pytest.mark.parametrize(
    "override",
    [
        "replicaCount=2",
        "operator.logFormat=xml",
        "image.pullPolicy=Sometimes",
        "watchNamespaces[0]=Not_A_Namespace",
        "unknownKey=1",
        "metrics.port=80",
        "metrics.serviceMonitor.interval=soon",
        "metrics.prometheusRule.disabled[0]=NoSuchAlert",
    ],
)
def test_values_schema_rejects_bad_values(helm: Path, override: str) -> None:
    result = run_helm(helm, "template", "flow", str(CHART), "--set", override)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr


def test_values_schema_matches_values_yaml() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) <= set(schema["properties"])
    import jsonschema

    jsonschema.Draft7Validator(schema).validate(values)


_KEY = re.compile(r"^( *)([A-Za-z][A-Za-z0-9]*):")


def _has_doc(lines: list[str], i: int) -> bool:
    """Whether the comment block right above line ``i`` holds a ``# --`` line."""
    j = i - 1
    while j >= 0 and lines[j].strip().startswith("#"):
        if lines[j].strip().startswith("# --"):
            return True
        j -= 1
    return False


def _parent(lines: list[str], i: int, indent: int) -> int | None:
    for j in range(i - 1, -1, -1):
        match = _KEY.match(lines[j])
        if match and len(match.group(1)) < indent:
            return j
    return None


def test_every_value_is_documented() -> None:
    """helm-docs style: each key has a `# --` line, or is a group of documented keys,
    or lies inside the value of a documented key."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys = [(i, len(m.group(1))) for i, line in enumerate(lines) if (m := _KEY.match(line))]
    documented: dict[int, bool] = {}
    for i, indent in keys:
        parent = _parent(lines, i, indent) if indent else None
        documented[i] = _has_doc(lines, i) or (parent is not None and documented[parent])
    for i, indent in reversed(keys):
        children = [c for c, ci in keys if ci > indent and _parent(lines, c, ci) == i]
        if not documented[i] and children and all(documented[c] for c in children):
            documented[i] = True
    assert [lines[i].strip() for i, ok in documented.items() if not ok] == []
