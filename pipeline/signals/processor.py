"""decode -> subscription -> validate and map, for one Kafka record (value, headers). No I/O.

This is the CPU path the benchmarks measure: everything a record goes through before
it joins a batch or the dead-letter topic. A decoder may offer a lane (the codec's:
bytes to the signal in one pass, for the records it is sure of); otherwise, and for
whatever the lane is not sure of, the record is decoded, then validation and mapping
are one pass for the Avro record (``fused``); what that pass is not sure of goes
through ``validate_event`` then ``map_event``, which decide and explain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final, Protocol, TypeAlias

from pipeline.config import OutOfTier
from pipeline.signals import catalog
from pipeline.signals.catalog import Tier
from pipeline.signals.fused import map_avro_record
from pipeline.signals.mapping import MappedSignal, MappingOptions, map_event
from pipeline.signals.outcomes import Reason, Rejection
from pipeline.signals.validation import validate_event


@dataclass(frozen=True, slots=True)
class Dropped:
    """Deliberately not delivered and not dead-lettered (counted)."""

    signal_type: str
    reason: str


class Decoded(Protocol):
    record_name: str
    record: dict[str, object]


class DecodeFailure(Protocol):
    reason: str
    message: str


#: A record's headers as confluent-kafka gives them (``Message.headers()``): None when it
#: has none, else (name, value) pairs (a dict where a caller built them by hand).
Headers: TypeAlias = (
    Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None
)


class Decoder(Protocol):
    def decode(self, value: bytes | None, headers: Headers = None) -> Decoded | DecodeFailure: ...


#: ``lane(value, headers)``: the record's signal, or None (then the regular path decides).
#: A decoder may have ``signal_lane(mapping, types_in_tier) -> Lane | None``.
Lane = Callable[[bytes | None, Headers], MappedSignal | None]


Outcome = MappedSignal | Rejection | Dropped


def signal_type_of(record_name: str) -> str | None:
    """``connect.signals.OrderEvent`` (or ``OrderEvent``) -> ``order``."""
    return _BY_FULL_NAME.get(record_name) or catalog.BY_RECORD_NAME.get(
        record_name.rpartition(".")[2]
    )


_BY_FULL_NAME: Final = {
    f"{catalog.AVRO_NAMESPACE}.{name}": signal_type
    for name, signal_type in catalog.BY_RECORD_NAME.items()
}


class EventProcessor:
    """Turns record values into signals or rejections, with the configured rules."""

    def __init__(
        self,
        decoder: Decoder,
        mapping: MappingOptions,
        tier: Tier = Tier.ULTIMATE,
        out_of_tier: OutOfTier = OutOfTier.DEAD_LETTER,
    ) -> None:
        self._decoder = decoder
        self._mapping = mapping
        self._tier = tier
        self._in_tier = catalog.types_in_tier(tier)
        self._drop_out_of_tier = out_of_tier is OutOfTier.DROP
        lanes = getattr(decoder, "signal_lane", None)
        self._lane: Lane | None = None if lanes is None else lanes(mapping, self._in_tier)

    def process(self, value: bytes | None, headers: Headers = None) -> Outcome:
        """One record: its value, and its headers (a writer schema id may be in them)."""
        lane = self._lane
        if lane is not None:
            signal = lane(value, headers)
            if signal is not None:
                return signal
        decoded = self._decoder.decode(value, headers)
        record = getattr(decoded, "record", None)
        if record is None:
            failure: DecodeFailure = decoded  # type: ignore[assignment]
            return Rejection.single(Reason(failure.reason), "", failure.message)
        ok: Decoded = decoded  # type: ignore[assignment]
        signal_type = signal_type_of(ok.record_name)
        if signal_type is None:
            return Rejection.single(
                Reason.UNKNOWN_SCHEMA, "", f"record {ok.record_name!r} is not a signal type"
            )
        return self.process_record(signal_type, record, avro=True)

    def process_record(
        self, signal_type: str, record: dict[str, object], *, avro: bool = False
    ) -> Outcome:
        """tier -> validate -> map for a decoded record of a known signal type.

        The one order of checks for ``run`` and the offline ``check``, so both give the
        same reason. ``avro``: the record came from an Avro decoder (types already fixed),
        so the fused fast path may decide it.
        """
        if signal_type not in self._in_tier:
            if self._drop_out_of_tier:
                return Dropped(signal_type, "subscription")
            return _about(
                Rejection.single(
                    Reason.SUBSCRIPTION,
                    "signalType",
                    f"{signal_type!r} is not included in the {self._tier} subscription",
                ),
                signal_type,
                record,
            )
        if avro:
            fused = map_avro_record(signal_type, record, self._mapping)
            if fused is not None:
                return fused
        # Not certain on the fused path: the strict one decides and explains.
        valid = validate_event(signal_type, record)
        if isinstance(valid, Rejection):
            return _about(valid, signal_type, record)
        mapped = map_event(valid, self._mapping)
        if isinstance(mapped, Rejection):
            return _about(mapped, signal_type, record)
        return mapped


def _about(rejection: Rejection, signal_type: str, record: dict[str, object]) -> Rejection:
    """The rejection, naming the event it is about (for the logs)."""
    event_id = record.get("eventId")
    return replace(
        rejection, signal_type=signal_type, event_id=event_id if isinstance(event_id, str) else None
    )
