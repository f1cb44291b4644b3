"""The session stage's settings: names operators' tooling uses, off by default."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, DeriveAbandonment, load_settings
from pipeline.sessions.store import session_options
from pipeline.signals.mapping import MappingOptions


def test_off_by_default() -> None:
    settings = load_settings(topics=["clicks"])
    assert settings.derive_abandonment is DeriveAbandonment.OFF
    assert settings.session_gap_s == 1800
    assert session_options(settings, MappingOptions()) is None


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_TOPICS", "clicks")
    monkeypatch.setenv("PIPELINE_DERIVE_ABANDONMENT", "cart")
    monkeypatch.setenv("PIPELINE_SESSION_GAP_S", "600")
    monkeypatch.setenv("PIPELINE_SESSION_GRACE_S", "5")
    monkeypatch.setenv("PIPELINE_SESSION_MAX_OPEN", "5000")
    options = session_options(load_settings(), MappingOptions())
    assert options is not None
    assert options.derive.kinds == {"cartAbandonment"}
    assert (options.gap_ms, options.grace_ms, options.max_open) == (600_000, 5_000, 5_000)


def test_both_kinds() -> None:
    options = session_options(
        load_settings(topics=["clicks"], derive_abandonment="both"), MappingOptions()
    )
    assert options is not None
    assert options.derive.kinds == {"cartAbandonment", "browseAbandonment"}


def test_not_in_a_tier_without_abandonment_signals() -> None:
    with pytest.raises(ConfigError, match="PIPELINE_DERIVE_ABANDONMENT needs"):
        load_settings(topics=["clicks"], derive_abandonment="browse", subscription_tier="Pro")
