"""Kafka clickstream events to Connect ``createSignals`` calls."""

__version__ = "0.1.0"
