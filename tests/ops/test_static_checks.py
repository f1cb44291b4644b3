"""Static checks of the deployment files: kustomize renders, Kubernetes schemas, checkov,
the compose specification, and cross-checks against the code (settings, metrics, CLI).

The tools live in a separate virtualenv, .venv-checks (`make checks-venv`; checkov's
dependencies clash with the project's pins). `make test` (and so CI) creates it and
sets PIPELINE_REQUIRE_CHECKS=1: there a missing tool fails. Run by hand without it,
the tests that need the tools are skipped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli.main import main
from pipeline.config import Settings
from pipeline.ops.metrics import PipelineMetrics

REPO = Path(__file__).resolve().parents[2]
CHECKS_BIN = REPO / ".venv-checks" / "bin"
K8S = REPO / "k8s"
RENDERED = ("overlays/dev", "overlays/prod", "overlays/prod-hpa", "replay")
DEPLOYMENT = "connect-signals-pipeline"


def _tool(name: str) -> Path:
    path = CHECKS_BIN / name
    if not path.exists():
        if os.environ.get("PIPELINE_REQUIRE_CHECKS"):
            pytest.fail(f"{path} missing: `make checks-venv` installs it")
        pytest.skip(f"{path} missing (run `make checks-venv`, or `make test`)")
    return path


def _run(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{CHECKS_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )


@cache
def _render(kustomization: str) -> str:
    result = _run(_tool("kubectl"), "kustomize", K8S / kustomization)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _yaml(text: str) -> list[dict[str, Any]]:
    """YAML documents as Python objects (PyYAML lives in the checks' virtualenv)."""
    code = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))"
    result = subprocess.run(
        [str(_tool("python")), "-c", code], input=text, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return [d for d in json.loads(result.stdout) if d]


def _objects(kustomization: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in _yaml(_render(kustomization))}


@pytest.mark.parametrize("kustomization", RENDERED)
def test_rendered_manifests_validate_against_the_kubernetes_schemas(kustomization, tmp_path):
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(_render(kustomization))
    result = _run(_tool("kubernetes-validate"), "--strict", rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    assert not [line for line in lines if line.startswith("ERROR")]
    # Custom resources have no schema in kubernetes-validate: it says so, and they are
    # checked below against what the code and the other objects say.
    unvalidated = {re.search(r"kind (\w+)", line)[1] for line in lines if "find schema" in line}  # type: ignore[index]
    assert unvalidated <= {"ScaledObject", "ServiceMonitor", "PrometheusRule"}
    passed = [line for line in lines if " passed for resource " in line]
    assert len(passed) + len(unvalidated) == len(_yaml(_render(kustomization)))


def test_secret_template_validates_and_names_only_settings(tmp_path):
    template = K8S / "base" / "secret.template.yaml"
    result = _run(_tool("kubernetes-validate"), "--strict", template)
    assert result.returncode == 0, result.stdout + result.stderr
    (secret,) = _yaml(template.read_text())
    names = {f"PIPELINE_{n.upper()}" for n in Settings.model_fields}
    assert set(secret["stringData"]) <= names
    secret_fields = {
        f"PIPELINE_{n.upper()}"
        for n, f in Settings.model_fields.items()
        if "SecretStr" in str(f.annotation)
    }
    assert secret_fields <= set(secret["stringData"])  # every secret setting has its slot


def test_deployment_is_locked_down_and_outlives_its_drain():
    objects = _objects("overlays/prod")
    config = objects["ConfigMap"]["data"]
    assert set(config) <= {f"PIPELINE_{n.upper()}" for n in Settings.model_fields}
    Settings(**{k.removeprefix("PIPELINE_").lower(): v for k, v in config.items()})
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > float(config["PIPELINE_DRAIN_TIMEOUT_S"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["limits"] and container["resources"]["requests"]
    port = container["ports"][0]["containerPort"]
    assert str(port) == config["PIPELINE_HTTP_PORT"]
    assert objects["Service"]["spec"]["ports"][0]["port"] == port
    assert container["image"].startswith("registry.example.com/")
    assert {"PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"} <= set(
        objects
    )


def test_autoscalers_follow_lag_and_stop_at_the_partition_count():
    prod, hpa = _objects("overlays/prod"), _objects("overlays/prod-hpa")
    config = prod["ConfigMap"]["data"]
    scaled = prod["ScaledObject"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == DEPLOYMENT
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == config["PIPELINE_GROUP_ID"]
    assert trigger["metadata"]["topic"] == config["PIPELINE_TOPICS"]
    autoscaler = hpa["HorizontalPodAutoscaler"]["spec"]
    assert autoscaler["scaleTargetRef"]["name"] == DEPLOYMENT
    # both stop at the same partition count, as does docker-compose's broker default
    compose = _yaml((REPO / "docker-compose.yml").read_text())[0]
    partitions = int(compose["services"]["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"])
    assert scaled["maxReplicaCount"] == autoscaler["maxReplicas"] == partitions
    assert "ScaledObject" not in hpa and "HorizontalPodAutoscaler" not in prod
    metric = autoscaler["metrics"][0]["pods"]["metric"]["name"]
    assert metric in _exposed_metric_names()


def _exposed_metric_names() -> set[str]:
    page = PipelineMetrics().exposition().decode()
    return {line.split()[2] for line in page.splitlines() if line.startswith("# TYPE")} | {
        re.split(r"[{ ]", line)[0] for line in page.splitlines() if not line.startswith("#")
    }


def test_alerts_and_monitoring_use_metrics_the_pipeline_exposes():
    objects = _objects("overlays/prod")
    rules = objects["PrometheusRule"]["spec"]["groups"][0]["rules"]
    alerts = {r["alert"] for r in rules}
    assert {
        "ConnectSignalsLagGrowing",
        "ConnectSignalsDeadLetterRate",
        "ConnectSignalsApiFailing",
        "ConnectSignalsNotReady",
    } <= alerts
    exposed = _exposed_metric_names()
    for rule in rules:
        for name in re.findall(r"connect_signals_\w+", rule["expr"]):
            assert name in exposed, f"{rule['alert']}: {name} is not a pipeline metric"
        assert rule["annotations"]["summary"] and rule["labels"]["severity"]
    # PromQL syntax: the rules are parsed as Prometheus would (promql-parser)
    code = (
        "import json, sys, promql_parser\n"
        "for expr in json.load(sys.stdin):\n"
        "    promql_parser.parse(expr)\n"
    )
    exprs = json.dumps([r["expr"] for r in rules])
    result = subprocess.run(
        [str(_tool("python")), "-c", code], input=exprs, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    monitor = objects["ServiceMonitor"]["spec"]
    assert monitor["endpoints"][0]["port"] == "metrics"
    assert (
        monitor["selector"]["matchLabels"].items()
        <= objects["Service"]["metadata"]["labels"].items()
    )


def test_replay_job_runs_a_real_replay_command():
    job = _objects("replay")["Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "replay"
    command = main.commands["replay"]
    command.make_context("replay", list(args[1:]))  # the options parse
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def _checkov(*args: str | Path) -> list[dict[str, Any]]:
    result = _run(_tool("checkov"), *args, "--skip-download", "-o", "json", "--quiet")
    reports = json.loads(result.stdout)
    return reports if isinstance(reports, list) else [reports]


def test_checkov_passes_on_the_manifests_and_the_dockerfile():
    reports = _checkov("-d", K8S, "--framework", "kustomize")
    reports += _checkov(
        "-f", REPO / "Dockerfile", "-f", K8S / "base" / "secret.template.yaml",
        "--framework", "dockerfile", "kubernetes",
    )  # fmt: skip
    kinds = {r["check_type"] for r in reports}
    assert kinds == {"kustomize", "dockerfile", "kubernetes"}
    for report in reports:
        summary = report["summary"]
        failed = report["results"].get("failed_checks", [])
        assert summary["failed"] == 0, [(c["check_id"], c["resource"]) for c in failed]
        assert summary["passed"] > 0 and summary["parsing_errors"] == 0
        for skipped in report["results"].get("skipped_checks", []):
            reason = skipped.get("check_result", {}).get("suppress_comment", "")
            assert len(reason) > 20, f"{skipped['check_id']} skipped without a reason"


def test_compose_file_follows_the_compose_specification(monkeypatch):
    result = _run(
        _tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    services = _yaml((REPO / "docker-compose.yml").read_text())[0]["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    assert services["schema-registry"]["image"].startswith("confluentinc/cp-schema-registry:")
    assert services["connect-sim"]["entrypoint"] == ["connect-sim"]
    schemas = services["schemas"]["command"]
    assert schemas[:2] == ["avro", "register"]
    for name, value in services["schemas"]["environment"].items():
        monkeypatch.setenv(name, value)
    register = main.commands["avro"].commands["register"]  # type: ignore[attr-defined]
    register.make_context("register", [a.replace("/app/avro", "avro") for a in schemas[2:]])
    producer = services["producer"]["command"]
    for name, value in services["producer"]["environment"].items():
        monkeypatch.setenv(name, value)
    main.commands[producer[0]].make_context(producer[0], list(producer[1:]))
    pipeline = services["pipeline"]
    env = pipeline["environment"]
    Settings(**{k.removeprefix("PIPELINE_").lower(): v for k, v in env.items()})
    grace = int(pipeline["stop_grace_period"].removesuffix("s"))
    assert grace > Settings.model_fields["drain_timeout_s"].default


def test_dockerfile_is_multi_stage_slim_pinned_non_root_with_a_healthcheck():
    text = (REPO / "Dockerfile").read_text()
    images = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert len(images) >= 2  # build stage, runtime stage
    for image in images:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", image), image
    runtime = text[text.rindex("\nFROM ") :]
    assert not re.search(r"apt-get|build-essential|gcc", runtime)
    user = re.findall(r"^USER (\S+)", runtime, flags=re.M)
    assert user and user[-1] not in ("root", "0")
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (.*)$", runtime, flags=re.M | re.S)
    assert healthcheck and '"python"' in healthcheck[1] and "/healthz" in healthcheck[1]
    assert "curl" not in healthcheck[1]
    ignored = (REPO / ".dockerignore").read_text()
    assert ignored.splitlines()[1] == "*"  # only what the build copies is sent
