"""Why a consumer stops uncommitted: what follows its last commit is read again."""

from __future__ import annotations


class ConsumerStopped(Exception):
    """A condition no retry can fix: stop, commit nothing more, let an operator act.

    The message names what failed and why; ``connect-pipeline run`` prints it and exits
    non-zero. A restart re-reads from the committed offsets.
    """
