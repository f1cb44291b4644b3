"""How records end: what Connect's answers mean for each record of a batch, the ledger
record of an accepted signal, dead letters, skips, drops, and records let go unsent.
Mixed into ``SignalConsumer`` (the loop is ``consumer.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

from pipeline.connect.client import DeliveryReport
from pipeline.kafka.dead_letter_writer import DeadLetterWriter
from pipeline.kafka.ledger_index import LedgerIndex
from pipeline.kafka.ledger_writer import LedgerWriter, SourceRef
from pipeline.kafka.partition_state import InFlight, PartitionState, Waiting
from pipeline.kafka.records import Pending, RecordOrigin, RunSummary
from pipeline.kafka.transactions import Transactions
from pipeline.ops.metrics import PipelineMetrics
from pipeline.signals.outcomes import Reason, Rejection
from pipeline.signals.processor import Dropped

#: one partition generation's accepted records, and the records that waited on their keys
Group = tuple[list[Pending], list[Waiting]]


class RecordEndings:
    """Every record ends once: delivered, skipped, dropped, dead-lettered, or released
    unsent (a retired generation's, read again by the partition's owner)."""

    _in_flight: InFlight
    _ledger_writer: LedgerWriter | None
    _dead_letters: DeadLetterWriter
    _txn: Transactions | None
    _origin: RecordOrigin
    _own_origin: bool
    _buffered_bytes: int
    ledger: LedgerIndex
    metrics: PipelineMetrics
    summary: RunSummary

    def _add_to_batch(self, pending: Pending, fragment: bytes) -> None:
        raise NotImplementedError

    def _unsent(self, pending: Pending) -> None:
        """A record of a retired generation leaves unsent; records waiting on its key go."""
        self._release(pending)
        for waiter, fragment in self._in_flight.settle(pending.key) or ():
            if waiter.state.retired:
                self._release(waiter)
            elif self._in_flight.claim(waiter.key):
                self._add_to_batch(waiter, fragment)
            else:
                self._in_flight.wait(waiter.key, (waiter, fragment))

    def _settle(self, report: DeliveryReport) -> None:
        self.summary.api_calls += report.calls
        self.summary.api_retries += report.retries
        unknown: frozenset[int] = frozenset()
        if report.abandoned:
            if report.unsettled is None:
                return  # nothing known: the offsets stay uncommitted and are read again
            unknown = frozenset(report.unsettled)  # what Connect answered before counts
        batch = report.batch
        if unknown or report.rejected:
            accepted = self._rejected(report, unknown)
        else:  # the usual answer: all accepted
            accepted = list(batch.refs)
        if accepted:
            self._delivered(accepted, int(time.time() * 1000))
            self.metrics.observe_delivered(len(accepted), batch.fragments[0])

    def _rejected(self, report: DeliveryReport, unknown: frozenset[int]) -> list[Pending]:
        """Dead-letter a batch's rejected records (and those that waited on their keys);
        the accepted ones, in order."""
        batch = report.batch
        accepted: list[Pending] = []
        for index, pending in enumerate(batch.refs):
            if index in unknown:
                continue
            message = report.rejected.get(index)
            if message is None:
                accepted.append(pending)
                continue
            rejection = Rejection.single(Reason.API_REJECTED, "", message)
            # the idempotency key: the eventId when it is plain ASCII
            rejection = replace(rejection, event_id=batch.keys[index])
            waiting = self._in_flight.settle(pending.key) or []
            for record in [pending, *(w for w, _ in waiting)]:
                if record.state.retired:
                    self._release(record)  # read again by the partition's owner
                else:
                    self._dead_letter(record, rejection)
        return accepted

    def _delivered(self, accepted: list[Pending], accepted_ms: int) -> None:
        """Connect accepted these (one batch's): remember them in the ledger, then finish
        each (and any record that waited on its key). In a transaction at once: an
        offset commits with its ledger record; without, when the ledger write is
        acknowledged. The index takes the batch's keys under one lock and clock read."""
        self.summary.delivered.update([pending.signal_type for pending in accepted])
        writer = self._ledger_writer
        if writer is None:
            self._finish_accepted(accepted)
            return
        self.ledger.add_many([pending.key for pending in accepted], accepted_ms)
        if not self._own_origin:  # a redrive: each ledger source is in the record's headers
            settle = self._in_flight.settle
            rows = [(self._ledger_source(p), p.key) for p in accepted]
            if self._txn is None:  # each finishes when its batch's ledger record is acked
                writer.write_batch(
                    rows, accepted_ms, [self._acked(p, settle(p.key)) for p in accepted]
                )
                return
            writer.write_batch(rows, accepted_ms)
            self._finish_group(accepted, [w for p in accepted for w in settle(p.key) or ()])
            return
        # the ledger source is the record itself (a derived signal's: its generation's
        # partition): one ledger record per source partition, finished as one
        groups = self._by_source(accepted)
        sources = [
            (state.key[0], state.key[1], [p.offset for p in group], [p.key for p in group])
            for state, (group, _) in groups.items()
        ]
        if self._txn is None:  # each group finishes when its ledger record is acked
            acks = [partial(self._finish_group, *group) for group in groups.values()]
            writer.write_sources(sources, accepted_ms, acks)
            return
        writer.write_sources(sources, accepted_ms)
        for group, waiting in groups.values():
            self._finish_group(group, waiting)

    def _by_source(self, accepted: list[Pending]) -> dict[PartitionState, Group]:
        """A delivered batch's records by partition generation, each with the records that
        waited on its keys (their flights end here)."""
        settle = self._in_flight.settle
        groups: dict[PartitionState, Group] = {}
        for pending in accepted:
            group = groups.get(pending.state)
            if group is None:
                group = groups[pending.state] = ([], [])
            group[0].append(pending)
            waiting = settle(pending.key)
            if waiting:
                group[1].extend(waiting)
        return groups

    def _finish_group(self, accepted: list[Pending], waiting: list[Waiting]) -> None:
        """Delivered records whose ledger record is written (or in the transaction): each
        finished, and the records that waited on their keys skipped."""
        self._finish_accepted(accepted)
        for waiter, _ in waiting:
            self._skip(waiter)

    def _finish_accepted(self, accepted: list[Pending]) -> None:
        """``_finish`` for a delivered batch's records in one pass."""
        released = 0
        for pending in accepted:
            on_finish = pending.on_finish
            if on_finish is not None:
                on_finish()  # a derived signal: settled, no offset of its own
            elif not pending.state.retired:  # a retired generation's: nothing moves
                pending.state.offsets.finish(pending.offset)
            released += pending.size
            pending.size = 0
        self._buffered_bytes -= released

    def _acked(self, pending: Pending, waiting: list[Waiting] | None) -> Callable[[], None]:
        """Plain mode: what finishes a record once its ledger record is acknowledged."""

        def done() -> None:
            self._finish(pending)
            for waiter, _ in waiting or ():
                self._skip(waiter)

        return done

    def _ledger_source(self, pending: Pending) -> SourceRef:
        if self._own_origin:
            return pending.state.key[0], pending.ledger_partition, pending.offset
        source, _ = self._origin.source(pending.message)  # a redrive: the original record
        return source.topic, pending.ledger_partition, source.offset

    def _finish(self, pending: Pending) -> None:
        if pending.on_finish is not None:
            pending.on_finish()  # a derived signal: settled, no offset of its own
        else:
            pending.state.finish(pending.offset)  # a retired generation's: nothing moves
        self._release(pending)

    def _release(self, pending: Pending) -> None:
        self._buffered_bytes -= pending.size
        pending.size = 0

    def _skip(self, pending: Pending) -> None:
        self.summary.skipped += 1
        self.metrics.skipped.inc()
        self._finish(pending)

    def _drop(self, pending: Pending, dropped: Dropped) -> None:
        self.summary.dropped[f"{dropped.signal_type}:{dropped.reason}"] += 1
        self.metrics.dropped.inc()
        self._finish(pending)

    def _dead_letter(self, pending: Pending, rejection: Rejection) -> None:
        self._dead_letters.write(pending, rejection)

    def _count_dead_letters(self, reason: str, count: int) -> None:
        self.summary.dead_lettered[reason] += count
        self.metrics.dead_lettered[reason].inc(count)
