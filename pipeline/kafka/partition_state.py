"""Partition state with a generation: what one assignment of a partition owns.

Assign makes a new generation; revoke, loss or a rewind retires it. Records keep a
reference to the generation that read them, so whatever a retired generation's batches
report later (accepted, rejected, abandoned) can never finish a record of a newer
generation nor move its offsets: that state is simply no longer the partition's.
Most loss and duplicate bugs in consumers of this kind come from state that outlives
its assignment; here it cannot, by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from pipeline.kafka.offsets import PartitionOffsets
from pipeline.kafka.records import Pending, TopicPartitionKey


class PartitionState:
    """One generation of one partition: its offsets and whether it is still current."""

    __slots__ = ("generation", "key", "offsets", "retired")

    def __init__(self, key: TopicPartitionKey, generation: int) -> None:
        self.key = key
        self.generation = generation
        self.offsets = PartitionOffsets()
        self.retired = False

    def finish(self, offset: int) -> None:
        if not self.retired:
            self.offsets.finish(offset)

    def __repr__(self) -> str:
        state = "retired" if self.retired else "current"
        return f"PartitionState({self.key[0]}[{self.key[1]}] gen {self.generation}, {state})"


class Partitions:
    """The current generation of every assigned partition."""

    def __init__(self) -> None:
        self._current: dict[TopicPartitionKey, PartitionState] = {}
        self._generations = 0
        #: the current generation of a partition, or None (the dict's own ``get``: the
        #: loop asks once per record)
        self.get: Callable[[TopicPartitionKey], PartitionState | None] = self._current.get
        #: how many generations were retired so far: a batch formed since the last
        #: change holds no record of a retired generation
        self.retirements = 0

    def assign(self, keys: Iterable[TopicPartitionKey]) -> list[PartitionState]:
        """A new generation for each (retiring one still there: assigned twice)."""
        states = []
        for key in keys:
            old = self._current.get(key)
            if old is not None:
                old.retired = True
                self.retirements += 1
            self._generations += 1
            state = self._current[key] = PartitionState(key, self._generations)
            states.append(state)
        return states

    def retire(self, keys: Iterable[TopicPartitionKey]) -> list[PartitionState]:
        retired = []
        for key in keys:
            state = self._current.pop(key, None)
            if state is not None:
                state.retired = True
                self.retirements += 1
                retired.append(state)
        return retired

    def renew(self) -> None:
        """A rewind: every partition starts a new generation at its committed offset."""
        self.assign(list(self._current))

    def __contains__(self, key: object) -> bool:
        return key in self._current

    def __iter__(self) -> Iterator[PartitionState]:
        return iter(list(self._current.values()))

    def __len__(self) -> int:
        return len(self._current)

    def keys(self) -> list[TopicPartitionKey]:
        return list(self._current)

    @property
    def unfinished(self) -> int:
        return sum(s.offsets.pending for s in self._current.values())


#: a record waiting on a key in flight, with its signal's JSON (to send it if need be)
Waiting = tuple[Pending, bytes]


class InFlight:
    """Signals batched or sent and not settled yet, by idempotency key, process-wide.

    A record whose key is already on its way (the same event read twice, or a partition
    re-read after a revoke or a rewind while the old generation's batch is still out)
    is neither sent again nor skipped: it waits for that flight's outcome. Accepted: it
    is finished as already delivered; rejected: it is dead-lettered too; dropped or
    abandoned: it is sent itself. Neither a duplicate nor a loss.
    """

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: dict[str, list[Waiting] | None] = {}

    def claim(self, key: str) -> bool:
        """True: the key was free and is now in flight (the caller sends it)."""
        if key in self._keys:
            return False
        self._keys[key] = None
        return True

    def wait(self, key: str, waiting: Waiting) -> None:
        queue = self._keys.get(key)
        if queue is None:
            self._keys[key] = [waiting]
        else:
            queue.append(waiting)

    def settle(self, key: str) -> list[Waiting] | None:
        """The flight ended: the records that waited on it (None: none)."""
        return self._keys.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)
