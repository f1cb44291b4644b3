import pytest

from pipeline.config import ConfigError, load_settings


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
