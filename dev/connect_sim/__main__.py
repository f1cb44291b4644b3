"""connect-sim: the Connect API simulator (createSignals over GraphQL, on HTTP).

Every option also reads CONNECT_SIM_<OPTION> from the environment, e.g.
CONNECT_SIM_PORT=8080 CONNECT_SIM_API_KEY=... connect-sim. Faults and idempotency
can also be changed while it runs: POST /admin/faults, POST /admin/idempotency.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Final

from connect_sim.app import build_app
from connect_sim.faults import BURST_FAULTS, MALFORMED_SHAPES, Faults
from connect_sim.simulator import Config


def _env(name: str, default: str) -> str:
    return os.environ.get(f"CONNECT_SIM_{name}", default)


def _flag(name: str) -> bool:
    return _env(name, "").lower() in ("1", "true", "yes")


#: (option, type, default, help); each also reads CONNECT_SIM_<OPTION> (upper case, "_").
OPTIONS: Final[tuple[tuple[str, type, object, str], ...]] = (
    ("host", str, "127.0.0.1", "interface to bind"),
    ("port", int, 8080, "port to listen on"),
    ("api-key", str, "sim-api-key", "the API key callers must send"),
    ("auth-header", str, "X-API-Key", "header carrying the key (e.g. Authorization)"),
    ("auth-scheme", str, "", "scheme before the key (e.g. Bearer); '' expects the bare key"),
    ("app-keys", str, "sim-app-key", "comma-separated appKeys that exist"),
    ("idempotency-ttl", float, 3600.0, "seconds an Idempotency-Key is remembered"),
    ("idempotency-max-keys", int, 100_000, "keys remembered at most (oldest go first)"),
    ("record-limit", int, None, "keep about the latest N accepted signals for /signals"),
    ("seed", int, 0, "seed of every fault decision"),
    ("error-rate", float, 0.0, "probability of 500/502/503"),
    ("rate-limit-rate", float, 0.0, "probability of 429"),
    ("rate-limit-burst", int, 0, "the first N calls get 429"),
    ("retry-after", float, 0.2, "Retry-After of a 429, in seconds"),
    ("latency-ms", float, 0.0, "processing time added to every call"),
    ("latency-jitter-ms", float, 0.0, "plus a uniform random share of this"),
    ("drop-connection-rate", float, 0.0, "probability the connection dies before processing"),
    ("drop-after-processing-rate", float, 0.0, "probability it dies after recording"),
    ("timeout-rate", float, 0.0, "probability a call hangs timeout-s, then is served late"),
    ("timeout-s", float, 30.0, "how long such a call hangs"),
    ("graphql-error-rate", float, 0.0, "probability of a 200 with one coded GraphQL error"),
    ("graphql-error-code", str, "THROTTLED", "that error's extensions.code ('any': transient)"),
    ("malformed-rate", float, 0.0, "probability of a malformed answer"),
    ("malformed-shape", str, "any", f"its shape: any, {', '.join(MALFORMED_SHAPES)}"),
    ("proxy-407-rate", float, 0.0, "probability of a proxy's 407 HTML page"),
    ("gateway-timeout-rate", float, 0.0, "probability of a 504 (nothing recorded)"),
    ("gateway-timeout-over-signals", int, 0, "calls with more signals get 504 (0: off)"),
    ("burst", int, 0, "the first N calls meet --burst-fault"),
    ("burst-fault", str, "malformed", f"one of {', '.join(BURST_FAULTS)}"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="connect-sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name, kind, default, text in OPTIONS:
        raw = os.environ.get(f"CONNECT_SIM_{name.upper().replace('-', '_')}")
        value = default if raw is None else kind(raw)  # set but empty: '' (auth scheme)
        p.add_argument(f"--{name}", type=kind, default=value, help=f"{text} (default: {value})")
    p.add_argument(
        "--no-idempotency",
        action="store_true",
        default=_flag("NO_IDEMPOTENCY"),
        help="ignore Idempotency-Key: every repeat is recorded",
    )
    p.add_argument(
        "--reject-whole-batch",
        action="store_true",
        default=_flag("REJECT_WHOLE_BATCH"),
        help="a batch with any invalid signal is rejected whole",
    )
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> Config:
    faults = Faults(
        seed=args.seed,
        error_rate=args.error_rate,
        rate_limit_rate=args.rate_limit_rate,
        rate_limit_burst=args.rate_limit_burst,
        retry_after_s=args.retry_after,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        drop_connection_rate=args.drop_connection_rate,
        drop_after_processing_rate=args.drop_after_processing_rate,
        timeout_rate=args.timeout_rate,
        timeout_s=args.timeout_s,
        reject_whole_batch=args.reject_whole_batch,
        graphql_error_rate=args.graphql_error_rate,
        graphql_error_code=args.graphql_error_code,
        malformed_rate=args.malformed_rate,
        malformed_shape=args.malformed_shape,
        proxy_407_rate=args.proxy_407_rate,
        gateway_timeout_rate=args.gateway_timeout_rate,
        gateway_timeout_over_signals=args.gateway_timeout_over_signals,
        burst=args.burst,
        burst_fault=args.burst_fault,
    )
    faults.check()
    return Config(
        api_key=args.api_key,
        auth_header=args.auth_header,
        auth_scheme=args.auth_scheme,
        app_keys=frozenset(k.strip() for k in args.app_keys.split(",") if k.strip()),
        idempotency=not args.no_idempotency,
        idempotency_ttl_s=args.idempotency_ttl,
        idempotency_max_keys=args.idempotency_max_keys,
        record_limit=args.record_limit,
        faults=faults,
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)  # injected drops are noisy
    uvicorn.run(
        build_app(config_from(args)),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
    )


if __name__ == "__main__":
    main()
