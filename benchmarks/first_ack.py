"""Time to first ack: ``connect-pipeline run`` launched -> its first createSignals POST.

The embedded broker, a fresh topic holding a few events, a tiny HTTP sink on 127.0.0.1
that accepts every signal; the pipeline with its defaults (ledger, transactions, dead
letters). Prints each run and the median. ``python -m benchmarks.first_ack --runs 3``;
``--workers 2`` for PIPELINE_WORKERS; ``--variants before=/tmp/wt-a,after=/tmp/wt-b``
runs the pipeline from each of these source trees in turn (``PYTHONPATH``), alternated
run by run, so a before/after comparison shares one broker and one stretch of machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from devtools import stack
from devtools.clickstream import clickstream
from devtools.producer import EventEncoder, produce_events

from pipeline.config import DEFAULT_AVRO_DIR

APP_KEY = "first-ack-app-key"


class _Sink(ThreadingHTTPServer):
    first_post: float | None = None
    posted = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    server: _Sink

    def do_POST(self) -> None:
        if self.server.first_post is None:
            self.server.first_post = time.monotonic()
            self.server.posted.set()
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        signals = body["variables"]["signals"]
        ids = [f"signal-{i}" for i in range(len(signals))]
        answer = json.dumps({"data": {"createSignals": {"signalIds": ids}}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def sink() -> Iterator[_Sink]:
    server = _Sink(("127.0.0.1", 0), _Handler)
    server.posted = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def one_run(
    bootstrap: str, events: int, log: Path, *, workers: int = 1, source: str | None = None
) -> float:
    """Seconds from launching ``connect-pipeline run`` to the sink's first POST;
    ``source``: the source tree the pipeline runs from (default: the installed one)."""
    topic, dlq = stack.new_topics(bootstrap, "first-ack", 3)
    encoder = EventEncoder(DEFAULT_AVRO_DIR)
    produce_events(bootstrap, topic, clickstream(events, invalid_ratio=0), encoder)
    with sink() as server:
        env = {
            "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "PIPELINE_TOPICS": topic,
            "PIPELINE_DLQ_TOPIC": dlq,
            "PIPELINE_GROUP_ID": f"first-ack-{uuid.uuid4().hex[:8]}",
            "PIPELINE_CONNECT_URL": f"http://127.0.0.1:{server.server_port}/graphql",
            "PIPELINE_DEFAULT_APP_KEY": APP_KEY,
            "PIPELINE_HTTP_PORT": "0",
            "PIPELINE_LOG_LEVEL": "WARNING",
            "PIPELINE_WORKERS": str(workers),
        }
        extra = {}
        if source is not None:
            extra["PYTHONPATH"] = os.pathsep.join(filter(None, [source, os.getenv("PYTHONPATH")]))
        launched = time.monotonic()
        process = stack.start_pipeline(
            env, log, extra_env=extra, cwd=Path(source) if source else None
        )
        try:
            if not server.posted.wait(60):
                raise TimeoutError(f"no POST in 60 s; see {log}")
        finally:
            stack.stop_process(process)
        assert server.first_post is not None
        return server.first_post - launched


def _variants(text: str | None) -> dict[str, str | None]:
    if not text:
        return {"pipeline": None}
    pairs = (item.partition("=") for item in text.split(","))
    return {name: str(Path(path).resolve()) for name, _, path in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--variants", help="name=source-tree,... alternated run by run")
    options = parser.parse_args()
    variants = _variants(options.variants)
    figures: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp, stack.kafka() as kafka:
        for run in range(options.runs):
            for name, source in variants.items():
                log = Path(tmp) / f"{name}-run{run}.log"
                seconds = one_run(
                    kafka.bootstrap_servers,
                    options.events,
                    log,
                    workers=options.workers,
                    source=source,
                )
                figures[name].append(seconds)
                print(f"run {run + 1} {name}: first ack {seconds:.2f} s", flush=True)
    for name, values in figures.items():
        median = statistics.median(values)
        listed = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name}: first ack median of {options.runs}: {median:.2f} s ({listed})")


if __name__ == "__main__":
    main()
