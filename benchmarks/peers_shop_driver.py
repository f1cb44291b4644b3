"""The measuring half of ``benchmarks.peers_shop``, run by the harness's own Python.

    <harness venv>/bin/python peers_shop_driver.py PLAN.json   (cwd: a copy of the harness)

Runs the harness's ``run_one`` for each variant and run of the plan, alternated, with
the sink count each variant must reach, and appends each row to the plan's results
file. It runs in a process of its own, as small as the harness's ``bench.py``: a
consumer's peak RSS (``ru_maxrss`` from ``wait4``) counts the memory of the process
that launched it, since the child starts as its copy (fork or vfork, then exec), so
the process holding the stream must not be the launcher. Imports nothing of the
project: the harness's venv does not have it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def main(plan_path: str) -> None:
    with open(plan_path) as f:
        plan: dict[str, Any] = json.load(f)
    sys.path.insert(0, os.getcwd())
    import bench  # the harness's runner, copied into the working directory

    bench.SINK_PORT = plan["sink_port"]
    bench.RUN_TIMEOUT = plan["timeout_s"]
    environments: dict[str, dict[str, str]] = plan["environments"]
    for name in environments:
        bench.VARIANTS[name] = (["p_project.py", "{group}"], True, f"the project, {name}")
    every_key = {k for env in environments.values() for k in env}
    os.environ.update(plan["common_environment"])
    sink = bench.Sink()
    try:
        for run in range(1, plan["runs"] + 1):
            for name in plan["variants"]:
                for key in every_key:
                    os.environ.pop(key, None)
                os.environ.update(environments[name])
                bench.N_RECORDS = plan["expected"][name]
                row = bench.run_one(name, run, sink)
                with open(plan["results"], "a") as f:
                    f.write(json.dumps(row) + "\n")
    finally:
        sink.stop()


if __name__ == "__main__":
    main(sys.argv[1])
