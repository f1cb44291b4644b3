from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_settings
from tests.certificates import self_signed


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name)


def test_errors_name_the_environment_variable(monkeypatch):
    monkeypatch.setenv("PIPELINE_TOPICS", "clicks")
    monkeypatch.setenv("PIPELINE_BATCH_MAX_SIGNALS", "0")
    monkeypatch.setenv("PIPELINE_CONNECT_URL", "ftp://nowhere")
    with pytest.raises(ConfigError) as error:
        load_settings()
    text = str(error.value)
    assert "PIPELINE_BATCH_MAX_SIGNALS: Input should be greater than or equal to 1" in text
    assert "PIPELINE_CONNECT_URL: must be an http:// or https:// URL" in text


def test_topics_or_pattern_exactly_one(monkeypatch):
    with pytest.raises(ConfigError, match="exactly one of PIPELINE_TOPICS"):
        load_settings()
    monkeypatch.setenv("PIPELINE_TOPIC_PATTERN", "clicks-.*")
    assert load_settings().source_topics == ["^clicks-.*"]


def test_comma_separated_and_json_topics(monkeypatch):
    monkeypatch.setenv("PIPELINE_TOPICS", "a, b")
    assert load_settings().topics == ["a", "b"]
    monkeypatch.setenv("PIPELINE_TOPICS", '["c"]')
    assert load_settings().topics == ["c"]


def test_secrets_are_masked_and_passed_to_librdkafka(monkeypatch):
    monkeypatch.setenv("PIPELINE_TOPICS", "a")
    monkeypatch.setenv("PIPELINE_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("PIPELINE_CONNECT_API_KEY", "sk-123")
    settings = load_settings()
    assert "hunter2" not in repr(settings) and "sk-123" not in repr(settings)
    assert settings.kafka_common()["sasl.password"] == "hunter2"


def test_toml_file_is_read_below_the_environment(monkeypatch, tmp_path):
    config = tmp_path / "pipeline.toml"
    config.write_text('topics = ["from-file"]\ngroup_id = "file-group"\n')
    monkeypatch.setenv("PIPELINE_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIPELINE_GROUP_ID", "env-group")
    settings = load_settings()
    assert settings.topics == ["from-file"]
    assert settings.group_id == "env-group"


def test_as_environment_configures_a_child_exactly_and_carries_secrets(monkeypatch):
    from pipeline.config import Settings

    original = Settings(
        topics=["a", "b"],
        kafka_config={"fetch.wait.max.ms": "20"},
        connect_api_key="api-secret",
        schema_registry_basic_auth="user:registry-secret",
        batch_max_signals=7,
    )
    env = original.as_environment()
    assert env["PIPELINE_CONNECT_API_KEY"] == "api-secret"
    assert env["PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH"] == "user:registry-secret"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings() == original


def test_the_transactional_id_is_the_setting_or_stable_per_replica(monkeypatch):
    import socket

    monkeypatch.setenv("PIPELINE_TOPICS", "clicks")
    monkeypatch.setenv("PIPELINE_GROUP_ID", "g")
    assert load_settings().replica_transactional_id() == f"g-{socket.gethostname()}"
    monkeypatch.setenv("PIPELINE_GROUP_INSTANCE_ID", "pod-1")
    assert load_settings().replica_transactional_id() == "g-pod-1"
    monkeypatch.setenv("PIPELINE_TRANSACTIONAL_ID", "explicit")
    assert load_settings().replica_transactional_id() == "explicit"


def test_librdkafka_prefetch_is_bounded_within_the_memory_budget():
    from pipeline.config import Settings
    from pipeline.kafka.consumer import consumer_config

    conf = consumer_config(Settings(topics=["a"], max_buffered_bytes=32 * 1024 * 1024))
    # its own defaults (100,000 messages, 64 MiB) would hold several times the budget
    assert conf["queued.max.messages.kbytes"] == 4096
    assert conf["queued.min.messages"] == 10_000
    explicit = Settings(topics=["a"], fetch_buffer_kbytes=512, fetch_queue_messages=500)
    assert consumer_config(explicit)["queued.max.messages.kbytes"] == 512
    assert consumer_config(explicit)["queued.min.messages"] == 500


def test_a_full_prefetch_queue_delays_the_next_fetch_briefly_unless_configured():
    from pipeline.config import Settings
    from pipeline.kafka.consumer import consumer_config

    # librdkafka's 1,000 ms left a backlog's loop waiting for records after each big fetch
    assert consumer_config(Settings(topics=["a"]))["fetch.queue.backoff.ms"] == 20
    tuned = Settings(topics=["a"], kafka_config={"fetch.queue.backoff.ms": "5"})
    assert consumer_config(tuned)["fetch.queue.backoff.ms"] == "5"


# --- fail fast: unknown variables, unknown log level -----------------------------------


def test_unknown_variable_is_named_with_the_closest_known_name(monkeypatch):
    monkeypatch.setenv("PIPELINE_TOPICS", "a")
    monkeypatch.setenv("PIPELINE_DLQ_TOPICS", "typo-dlq")
    monkeypatch.setenv("PIPELINE_NOTHING_LIKE_ANY_SETTING_AT_ALL", "1")
    with pytest.raises(ConfigError) as error:
        load_settings()
    lines = str(error.value).splitlines()
    assert "PIPELINE_DLQ_TOPICS: unknown setting; did you mean PIPELINE_DLQ_TOPIC?" in lines
    assert "PIPELINE_NOTHING_LIKE_ANY_SETTING_AT_ALL: unknown setting" in lines


def test_every_pipeline_variable_the_project_sets_is_known():
    """Tests, benchmarks, dev tools, manifests and docs set these: none may be 'unknown'."""
    import re

    from pipeline.config import known_variables

    repo = Path(__file__).resolve().parents[2]
    roots = ["benchmarks", "dev", "k8s", "docs", "examples", "pipeline"]
    files = [p for root in roots for p in (repo / root).rglob("*") if p.is_file()]
    # tests: the modules that configure pipelines for others (tests themselves set
    # unknown names on purpose, to see them refused or stripped)
    files += [*(repo / "tests").rglob("*harness*.py"), *(repo / "tests").rglob("conftest.py")]
    files += [repo / "docker-compose.yml", repo / "Dockerfile", repo / "Makefile"]
    peers = repo.parent / "shared" / "bench-peers" / "p_project.py"
    files += [peers] if peers.exists() else []
    used: set[str] = set()
    for path in files:
        if path.suffix in (".py", ".md", ".yml", ".yaml", ".toml", ".env", "") or path.name in (
            "Dockerfile",
            "Makefile",
        ):
            text = path.read_text(errors="replace")
            used |= set(re.findall(r"\bPIPELINE_[A-Z0-9_]*[A-Z0-9]\b", text))
    assert len(used) > 30
    assert sorted(used - known_variables()) == []


def test_log_level_is_checked_and_normalised(monkeypatch):
    monkeypatch.setenv("PIPELINE_TOPICS", "a")
    monkeypatch.setenv("PIPELINE_LOG_LEVEL", "debug")
    assert load_settings().log_level == "DEBUG"
    monkeypatch.setenv("PIPELINE_LOG_LEVEL", "verbose")
    with pytest.raises(ConfigError, match="PIPELINE_LOG_LEVEL: 'verbose' is not one of DEBUG"):
        load_settings()


# --- file-mounted secrets ------------------------------------------------------------------


def test_secrets_are_read_from_files_below_the_environment(monkeypatch, tmp_path):
    (tmp_path / "PIPELINE_CONNECT_API_KEY").write_text("key-from-file\n")
    (tmp_path / "pipeline_kafka_sasl_password").write_text("sasl-from-file")
    (tmp_path / "..data").mkdir()  # a Kubernetes Secret volume's bookkeeping
    monkeypatch.setenv("PIPELINE_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("PIPELINE_TOPICS", "a")
    settings = load_settings()
    assert settings.connect_api_key is not None
    assert settings.connect_api_key.get_secret_value() == "key-from-file"
    assert settings.kafka_common()["sasl.password"] == "sasl-from-file"
    monkeypatch.setenv("PIPELINE_CONNECT_API_KEY", "key-from-env")
    assert load_settings().connect_api_key.get_secret_value() == "key-from-env"  # type: ignore[union-attr]


def test_a_misnamed_secret_file_or_a_missing_secrets_dir_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("PIPELINE_TOPICS", "a")
    (tmp_path / "PIPELINE_CONNECT_APIKEY").write_text("x")
    monkeypatch.setenv("PIPELINE_SECRETS_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="did you mean PIPELINE_CONNECT_API_KEY"):
        load_settings()
    monkeypatch.setenv("PIPELINE_SECRETS_DIR", str(tmp_path / "not-mounted"))
    with pytest.raises(ConfigError, match=r"PIPELINE_SECRETS_DIR: .*not-mounted is not a dir"):
        load_settings()


# --- credentials that are not SecretStr ------------------------------------------------------


def test_url_credentials_and_secret_kafka_config_values_are_masked_in_repr():
    from pipeline.config import Settings

    settings = Settings(
        topics=["a"],
        connect_url="https://connect-user:Url%40Pw-1@connect.example/graphql",
        schema_registry_url="https://RegistryToken-2@registry.example",
        kafka_config={
            "sasl.password": "KcPw-3",
            "ssl.key.password": "KcPw-4",
            "sasl.oauthbearer.client.secret": "KcPw-5",
            "ssl.key.pem": "KcPw-6",
            "linger.ms": "7",
        },
    )
    for text in (repr(settings), str(settings)):
        for secret in ("Url%40Pw-1", "Url@Pw-1", "RegistryToken-2", "KcPw-3", "KcPw-4", "KcPw-5"):
            assert secret not in text
        assert "KcPw-6" not in text
        assert "https://connect-user:**********@connect.example/graphql" in text
        assert "'linger.ms': '7'" in text  # not a secret: still shown
    # the values themselves are intact for the clients
    assert settings.kafka_common()["sasl.password"] == "KcPw-3"
    assert settings.connect_url.startswith("https://connect-user:Url%40Pw-1@")


def test_secret_property_names():
    from pipeline.config import is_secret_property

    secret = ["sasl.password", "ssl.key.password", "ssl.keystore.password", "ssl.key.pem",
              "sasl.oauthbearer.client.secret", "sasl.oauthbearer.config",
              "basic.auth.user.info", "bearer.auth.token", "sasl.jaas.config"]  # fmt: skip
    plain = ["linger.ms", "ssl.key.location", "sasl.oauthbearer.token.endpoint.url",
             "sasl.username", "bootstrap.servers", "enable.idempotence"]  # fmt: skip
    assert [n for n in secret if not is_secret_property(n)] == []
    assert [n for n in plain if is_secret_property(n)] == []


# --- Kafka and registry security as settings ---------------------------------------------------


def test_kafka_tls_client_certificate_and_oidc_map_to_librdkafka(monkeypatch, tmp_path):
    import certifi
    from confluent_kafka import Producer

    cert, key = self_signed(tmp_path, "pipeline", b"key-pass")
    env = {
        "PIPELINE_TOPICS": "a",
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "PIPELINE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "PIPELINE_KAFKA_SSL_CA_LOCATION": certifi.where(),
        "PIPELINE_KAFKA_SSL_CERTIFICATE_LOCATION": str(cert),
        "PIPELINE_KAFKA_SSL_KEY_LOCATION": str(key),
        "PIPELINE_KAFKA_SSL_KEY_PASSWORD": "key-pass",
        "PIPELINE_KAFKA_SASL_OAUTHBEARER_CLIENT_ID": "pipeline",
        "PIPELINE_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET": "oidc-secret",
        "PIPELINE_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "https://idp.example/token",
        "PIPELINE_KAFKA_SASL_OAUTHBEARER_SCOPE": "kafka",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    conf = load_settings().kafka_common()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "OAUTHBEARER"
    assert conf["sasl.oauthbearer.method"] == "oidc"
    assert conf["sasl.oauthbearer.client.secret"] == "oidc-secret"
    assert conf["ssl.key.password"] == "key-pass"
    # librdkafka itself accepts every property and loads the certificate and key
    producer = Producer({k: v for k, v in conf.items() if k != "logger"})
    producer.flush(0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PIPELINE_KAFKA_SSL_KEY_LOCATION": "/k"}, "needs PIPELINE_KAFKA_SSL_CERTIFICATE_LOC"),
        ({"PIPELINE_KAFKA_SASL_OAUTHBEARER_CLIENT_ID": "c"}, "needs PIPELINE_KAFKA_SASL_OAUTH"),
        ({"PIPELINE_KAFKA_SECURITY_PROTOCOL": "tls"}, "'tls' is not one of PLAINTEXT"),
        ({"PIPELINE_KAFKA_SASL_MECHANISM": "md5"}, "'md5' is not one of PLAIN"),
        (
            {
                "PIPELINE_SCHEMA_REGISTRY_URL": "https://u:p@registry",
                "PIPELINE_SCHEMA_REGISTRY_BEARER_TOKEN": "t",
            },
            "Schema Registry: choose one of basic auth",
        ),
    ],
)
def test_inconsistent_security_settings_fail_at_start(monkeypatch, env, message):
    monkeypatch.setenv("PIPELINE_TOPICS", "a")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_registry_bearer_token_reaches_a_real_registry(monkeypatch):
    """The SchemaRegistryClient built by the runner sends the configured bearer token."""
    import json as jsonlib
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from pipeline.config import Settings
    from pipeline.kafka.runner import build_decoder

    seen: list[str | None] = []
    schema = {"type": "record", "name": "E", "namespace": "x", "fields": []}

    class Registry(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = jsonlib.dumps({"schema": jsonlib.dumps(schema)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = Settings(
            topics=["a"],
            schema_registry_url=f"http://127.0.0.1:{server.server_address[1]}",
            schema_registry_bearer_token="registry-token-9",
        )
        decoder = build_decoder(settings)
        decoder.decode(b"\x00\x00\x00\x00\x07")  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
    assert seen and seen[0] == "Bearer registry-token-9"


def test_registry_tls_client_certificate_is_loaded_by_the_registry_client(tmp_path):
    import ssl

    import certifi
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from pipeline.config import Settings

    cert, key = self_signed(tmp_path, "pipeline", b"key-pass")
    settings = Settings(
        topics=["a"],
        schema_registry_url="https://registry.example",
        schema_registry_ssl_ca_location=certifi.where(),
        schema_registry_ssl_certificate_location=str(cert),
        schema_registry_ssl_key_location=str(key),
        schema_registry_ssl_key_password="key-pass",
        schema_registry_basic_auth="user:pw",
    )
    conf = settings.registry_config()
    assert conf["ssl.key.password"] == "key-pass" and conf["basic.auth.user.info"] == "user:pw"
    SchemaRegistryClient(conf)  # loads the chain: a wrong path or passphrase raises here
    wrong = {**conf, "ssl.key.password": "not-the-pass"}
    with pytest.raises(ssl.SSLError):
        SchemaRegistryClient(wrong)
