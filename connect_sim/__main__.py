"""``connect-sim``: start the Connect API simulator.

Every option also reads ``CONNECT_SIM_<NAME>`` from the environment (for compose and
Kubernetes), e.g. ``CONNECT_SIM_PORT=8080 CONNECT_SIM_API_KEY=... connect-sim``.
"""

from __future__ import annotations

import argparse
import logging
import os

from connect_sim.app import Config, build_app
from connect_sim.faults import Faults


def _env(name: str, default: str) -> str:
    return os.environ.get(f"CONNECT_SIM_{name}", default)


def _flag(name: str) -> bool:
    return _env(name, "").lower() in ("1", "true", "yes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="connect-sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(_env("PORT", "8080")))
    p.add_argument("--api-key", default=_env("API_KEY", "sim-api-key"))
    p.add_argument("--auth-header", default=_env("AUTH_HEADER", "Authorization"))
    p.add_argument(
        "--auth-scheme", default=_env("AUTH_SCHEME", "Bearer"), help="'' expects the bare key"
    )
    p.add_argument("--app-keys", default=_env("APP_KEYS", "sim-app-key"), help="comma-separated")
    p.add_argument("--no-idempotency", action="store_true", default=_flag("NO_IDEMPOTENCY"))
    p.add_argument(
        "--idempotency-ttl", type=float, default=float(_env("IDEMPOTENCY_TTL", "3600")), help="s"
    )
    p.add_argument(
        "--idempotency-max-keys", type=int, default=int(_env("IDEMPOTENCY_MAX_KEYS", "100000"))
    )
    p.add_argument(
        "--record-limit",
        type=int,
        default=int(_env("RECORD_LIMIT", "-1")) if _env("RECORD_LIMIT", "") else None,
        help="keep only the latest N accepted signals for /signals (counts stay exact)",
    )
    p.add_argument("--seed", type=int, default=int(_env("SEED", "0")))
    p.add_argument("--error-rate", type=float, default=float(_env("ERROR_RATE", "0")))
    p.add_argument("--rate-limit-rate", type=float, default=float(_env("RATE_LIMIT_RATE", "0")))
    p.add_argument("--rate-limit-burst", type=int, default=int(_env("RATE_LIMIT_BURST", "0")))
    p.add_argument("--retry-after", type=float, default=float(_env("RETRY_AFTER", "0.2")))
    p.add_argument("--latency-ms", type=float, default=float(_env("LATENCY_MS", "0")))
    p.add_argument("--latency-jitter-ms", type=float, default=float(_env("LATENCY_JITTER_MS", "0")))
    p.add_argument("--drop-connection-rate", type=float, default=float(_env("DROP_RATE", "0")))
    p.add_argument(
        "--drop-after-processing-rate", type=float, default=float(_env("DROP_AFTER_RATE", "0"))
    )
    p.add_argument("--timeout-rate", type=float, default=float(_env("TIMEOUT_RATE", "0")))
    p.add_argument("--timeout-s", type=float, default=float(_env("TIMEOUT_S", "30")))
    p.add_argument("--reject-whole-batch", action="store_true", default=_flag("REJECT_WHOLE_BATCH"))
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
    )
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
