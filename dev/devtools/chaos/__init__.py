"""``connect-pipeline chaos``: a clickstream through the pipeline while things break.

N events (a few percent invalid, some earlier-edition) go through a real broker and
the Connect simulator while ``connect-pipeline run`` processes are killed with SIGKILL
and restarted, a second replica joins and leaves the group, the broker is frozen
(SIGSTOP/SIGCONT) and the simulator answers with 5xx, 429 bursts, latency, timeouts
and dropped connections. The simulator runs with server-side idempotency off, so every
duplicate the pipeline sends is counted. Every random choice (event mix, when each
action happens, which replica dies, the simulator's faults) comes from ``--seed``.

The run fails (exit 1) when a valid event was never accepted, when the dead-letter
topic does not hold exactly the invalid events, when a replica crashed or hung, or
when the duplicates exceed the stated bound.
"""

from devtools.chaos.bounds import crash_bound, retry_allowance
from devtools.chaos.cli import chaos
from devtools.chaos.plan import Action, ChaosConfig, plan_actions, simulator_faults
from devtools.chaos.report import ChaosReport, Tally, tally_accepted
from devtools.chaos.run import ChaosRun

__all__ = [
    "Action",
    "ChaosConfig",
    "ChaosReport",
    "ChaosRun",
    "Tally",
    "chaos",
    "crash_bound",
    "plan_actions",
    "retry_allowance",
    "simulator_faults",
    "tally_accepted",
]
