"""manifests/kubernetes (the base) and manifests/overlays/sqlite: every resource valid for
Kubernetes 1.33 under strict schemas, the kustomizations complete and renderable, and the
Deployment wired to what the app really serves and reads."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from deploy.kustomize_render import load_kustomization, render
from deploy.routes import get_routes  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "manifests" / "kubernetes"
SQLITE = ROOT / "manifests" / "overlays" / "sqlite"
K8S = "1.33"
POD_LABELS = {"app.kubernetes.io/name": "signoff"}


def resource_files(root):
    return sorted(p for p in root.glob("*.yaml") if p.name != "kustomization.yaml")


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def by_kind(resources) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in resources:
        out.setdefault(r["kind"], []).append(r)
    return out


def one(resources, kind) -> dict:
    (found,) = by_kind(resources)[kind]
    return found


def container(deployment) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


@pytest.fixture(scope="module")
def base():
    return render(BASE)


@pytest.fixture(scope="module")
def sqlite():
    return render(SQLITE)


# -- validity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", resource_files(BASE) + resource_files(SQLITE), ids=lambda p: p.name)
def test_every_resource_file_is_strictly_valid_for_1_33(path):
    for resource in docs(path):
        # validate() raises on an unknown kind too, where the command line only warns
        assert kubernetes_validate.validate(resource, K8S, strict=True) == K8S


def test_strict_validation_refuses_a_misspelt_field():
    deployment = one(docs(BASE / "deployment.yaml"), "Deployment")
    container(deployment)["securityContext"]["readOnlyRootFileSystem"] = True  # sic
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S, strict=True)


def test_the_command_line_validator_passes_every_file():
    files = [str(p) for p in resource_files(BASE) + resource_files(SQLITE)]
    run = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", K8S, "--quiet", *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("root", [BASE, SQLITE], ids=["base", "sqlite"])
def test_rendered_kustomization_is_strictly_valid(root):
    for resource in render(root):
        assert kubernetes_validate.validate(resource, K8S, strict=True) == K8S


# -- the kustomizations ------------------------------------------------------------------------


def test_base_lists_every_resource_file_once():
    listed = load_kustomization(BASE)["resources"]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == [p.name for p in resource_files(BASE)]


def test_base_has_the_expected_resources(base):
    kinds = {kind: len(found) for kind, found in by_kind(base).items()}
    assert kinds == {
        "ServiceAccount": 1,
        "ConfigMap": 2,
        "Secret": 1,
        "Deployment": 1,
        "Service": 1,
        "PodDisruptionBudget": 1,
        "HorizontalPodAutoscaler": 1,
        "NetworkPolicy": 1,
    }


def test_overlay_lists_the_base_and_its_own_files():
    listed = load_kustomization(SQLITE)["resources"]
    assert (SQLITE / listed[0]).resolve() == BASE
    assert sorted(listed[1:]) == [p.name for p in resource_files(SQLITE)]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: the Python rendering stands alone")
@pytest.mark.parametrize("root", [BASE, SQLITE], ids=["base", "sqlite"])
def test_kubectl_kustomize_renders_the_same(root):
    run = subprocess.run(["kubectl", "kustomize", str(root)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    key = lambda r: (r["kind"], r["metadata"]["name"])  # noqa: E731
    assert sorted(docs_from(run.stdout), key=key) == sorted(render(root), key=key)


def docs_from(text):
    return [d for d in yaml.safe_load_all(text) if d]


# -- the Deployment --------------------------------------------------------------------------


def test_deployment_runs_three_hardened_replicas(base):
    deployment = one(base, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"]["matchLabels"] == POD_LABELS
    pod = spec["template"]["spec"]
    assert POD_LABELS.items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == one(base, "ServiceAccount")["metadata"]["name"]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    for key in ("runAsUser", "runAsGroup", "fsGroup"):
        assert isinstance(security[key], int) and security[key] > 0, key
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(deployment)["securityContext"]
    assert c["allowPrivilegeEscalation"] is False
    assert c["readOnlyRootFilesystem"] is True
    assert c["capabilities"]["drop"] == ["ALL"]
    assert c["runAsUser"] == security["runAsUser"]


def test_deployment_user_is_the_image_user(base):
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    (user,) = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    pod = one(base, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert user == f"{pod['runAsUser']}:{pod['runAsGroup']}"


def test_tmp_is_a_writable_empty_dir(base):
    deployment = one(base, "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container(deployment)["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_resources_are_requested_and_limited(base):
    resources = container(one(base, "Deployment"))["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_probes_hit_routes_the_app_serves_on_the_container_port(base, get_routes):  # noqa: F811 - the fixture imported above
    c = container(one(base, "Deployment"))
    (port,) = c["ports"]
    assert c["command"][:2] == ["signoff", "serve"]
    assert c["command"][c["command"].index("--port") + 1] == str(port["containerPort"])
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] in get_routes, (probe, get["path"], sorted(get_routes))
        assert get["port"] in (port["name"], port["containerPort"]), probe


def test_prestop_sleep_fits_in_the_grace_period(base):
    deployment = one(base, "Deployment")
    command = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # the sleep, then up to 15 s for requests in flight and the outbox handing its rows back
    from signoff.server import GRACEFUL_SECONDS

    assert grace >= int(command[1]) + GRACEFUL_SECONDS + 5


def test_workflow_file_is_mounted_where_signoff_config_points(base):
    deployment = one(base, "Deployment")
    c = container(deployment)
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    config_map = next(cm for cm in by_kind(base)["ConfigMap"] if "signoff.yaml" in cm["data"])
    volume = next(
        v
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if v.get("configMap", {}).get("name") == config_map["metadata"]["name"]
    )
    mount = next(m for m in c["volumeMounts"] if m["name"] == volume["name"])
    assert "subPath" not in mount  # a subPath mount is never updated when the ConfigMap changes
    assert mount.get("readOnly") is True
    assert env["SIGNOFF_CONFIG"] == f"{mount['mountPath']}/signoff.yaml"


def test_example_workflow_file_passes_check_config(base, tmp_path):
    config_map = next(cm for cm in by_kind(base)["ConfigMap"] if "signoff.yaml" in cm["data"])
    path = tmp_path / "signoff.yaml"
    path.write_text(config_map["data"]["signoff.yaml"], encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "signoff.cli", "check-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "OK" in run.stdout


def test_env_comes_from_the_secret_and_configmap_and_signoff_reads_it(base):
    from signoff.config import parse_config

    c = container(one(base, "Deployment"))
    sources = {(s.get("configMapRef") or s.get("secretRef"))["name"] for s in c["envFrom"]}
    config_maps = {cm["metadata"]["name"]: cm for cm in by_kind(base)["ConfigMap"]}
    secret = one(base, "Secret")
    assert sources == {secret["metadata"]["name"], "signoff-env"}
    names = set(secret["stringData"]) | set(config_maps["signoff-env"]["data"])
    config_map = next(cm for cm in config_maps.values() if "signoff.yaml" in cm["data"])
    workflow = parse_config(config_map["data"]["signoff.yaml"])
    agent_secrets = {a.secret_env for a in workflow.agents}
    assert agent_secrets <= set(secret["stringData"])  # every agent's key has a place in the Secret
    assert names - agent_secrets <= signoff_variables(), names - agent_secrets - signoff_variables()


def signoff_variables() -> set[str]:
    """The environment variables signoff itself reads: the settings, and serve's own two."""
    from signoff.settings import Settings

    return {f.validation_alias for f in Settings.model_fields.values()} | {"SIGNOFF_WORKERS", "SIGNOFF_LOG_FORMAT"}


def test_secret_template_holds_placeholders_only(base):
    secret = one(base, "Secret")
    assert "data" not in secret
    assert secret["stringData"]
    for key, value in secret["stringData"].items():
        assert "REPLACE_ME" in value, key


# -- the other resources -----------------------------------------------------------------------


def test_service_and_network_policy_use_the_http_port(base):
    c = container(one(base, "Deployment"))
    (port,) = c["ports"]
    service = one(base, "Service")
    assert service["spec"]["selector"] == POD_LABELS
    (sport,) = service["spec"]["ports"]
    assert sport["targetPort"] in (port["name"], port["containerPort"])
    policy = one(base, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == POD_LABELS
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": port["containerPort"]}]


def test_network_policy_egress_is_postgres_dns_and_https(base):
    egress = one(base, "NetworkPolicy")["spec"]["egress"]
    allowed = {(p["protocol"], p["port"]) for rule in egress for p in rule["ports"]}
    assert all("to" not in rule or rule["to"] for rule in egress)
    assert allowed == {("TCP", 5432), ("UDP", 53), ("TCP", 53), ("TCP", 443)}


def test_disruption_budget_and_autoscaler_follow_the_deployment(base):
    deployment = one(base, "Deployment")
    assert one(base, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == POD_LABELS
    hpa = one(base, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


# -- the SQLite overlay --------------------------------------------------------------------------


def test_sqlite_overlay_is_one_writer_on_a_volume(sqlite):
    kinds = by_kind(sqlite)
    assert "HorizontalPodAutoscaler" not in kinds
    deployment = one(sqlite, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    c = container(deployment)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["SIGNOFF_DATABASE_URL"] == "sqlite:////data/signoff.db"
    pvc = one(sqlite, "PersistentVolumeClaim")
    volume = next(
        v
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if v.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"]
    )
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts[volume["name"]] == "/data"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_replicas_pace_slack_for_their_number(base, sqlite):
    for resources in (base, sqlite):
        env = next(cm for cm in by_kind(resources)["ConfigMap"] if cm["metadata"]["name"] == "signoff-env")
        assert int(env["data"]["SIGNOFF_REPLICAS"]) == one(resources, "Deployment")["spec"]["replicas"]


def test_sqlite_overlay_changes_nothing_else(base, sqlite):
    changed = {
        ("Deployment", "signoff"),
        ("HorizontalPodAutoscaler", "signoff"),
        ("PersistentVolumeClaim", "signoff-data"),
        ("ConfigMap", "signoff-env"),
    }
    key = lambda r: (r["kind"], r["metadata"]["name"])  # noqa: E731
    assert {key(r): r for r in base if key(r) not in changed} == {key(r): r for r in sqlite if key(r) not in changed}
