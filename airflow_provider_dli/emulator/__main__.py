"""``dli-emulator`` / ``python -m airflow_provider_dli.emulator``: serve a local DLI until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from types import FrameType

from airflow_provider_dli.emulator.server import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_DOMAIN,
    DEFAULT_PASSWORD,
    DEFAULT_PROJECT_ID,
    DEFAULT_SECRET_KEY,
    DEFAULT_USER,
    DLIEmulator,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dli-emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    parser.add_argument("--access-key", default=DEFAULT_ACCESS_KEY)
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
    parser.add_argument("--project-id", default=DEFAULT_PROJECT_ID)
    parser.add_argument(
        "--user",
        default=f"{DEFAULT_DOMAIN}/{DEFAULT_USER}:{DEFAULT_PASSWORD}",
        help="IAM user accepted by POST /v3/auth/tokens, as DOMAIN/NAME:PASSWORD",
    )
    parser.add_argument("--starting-seconds", type=float, default=1.0, help="how long a job stays 'starting'")
    parser.add_argument("--running-seconds", type=float, default=5.0, help="how long a job stays 'running'")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every API request")
    args = parser.parse_args(argv)
    domain_user, _, password = args.user.partition(":")
    domain, _, user = domain_user.partition("/")
    if not (domain and user and password):
        parser.error("--user must look like DOMAIN/NAME:PASSWORD")

    emulator = DLIEmulator(
        host=args.host,
        port=args.port,
        project_id=args.project_id,
        access_keys={args.access_key: args.secret_key},
        users={(domain, user): password},
        starting_seconds=args.starting_seconds,
        running_seconds=args.running_seconds,
        latency=args.latency,
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with emulator:
        print(f"DLI emulator listening on {emulator.url} (project {args.project_id})", flush=True)
        print(f"AIRFLOW_CONN_DLI_DEFAULT='{json.dumps(emulator.connection())}'", flush=True)
        stop.wait()
    print("DLI emulator stopped", flush=True)


if __name__ == "__main__":
    main()
