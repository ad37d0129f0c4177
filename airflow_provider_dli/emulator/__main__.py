"""dli-emulator (or python -m airflow_provider_dli.emulator): serve a local Data Lake Insight (DLI) API for
offline DAG runs and tests, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import ipaddress
import json
import shlex
import signal
import socket
import sys
import textwrap
import threading
from types import FrameType

from airflow_provider_dli.emulator.readings import Readings, describe
from airflow_provider_dli.emulator.server import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_DOMAIN,
    DEFAULT_PASSWORD,
    DEFAULT_PROJECT_ID,
    DEFAULT_SECRET_KEY,
    DEFAULT_USER,
    DLIEmulator,
)

EXPOSED_WARNING = (
    "WARNING: the DLI emulator listens on {host}, beyond this machine. Anyone who can reach it can read and "
    "change its jobs and faults through /_emulator/*, which has no authentication, and its credentials are "
    "the printed test ones. Bind to 127.0.0.1 unless the network is yours alone."
)


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback one; ``0.0.0.0``, ``::`` and ``""`` are every interface."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)} if host else {"0.0.0.0"}  # noqa: S104
    except OSError:
        return True  # unresolvable: binding fails with its own error
    return all(ipaddress.ip_address(str(address).split("%")[0]).is_loopback for address in addresses)


EPILOG = """On start it prints its URL and a line "export AIRFLOW_CONN_DLI_DEFAULT=...": paste that line into the
shell that runs Airflow, and the connection dli_default points at the emulator.

Readings (--reading NAME=VALUE; the first value is the default):
"""


def reading(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` as a pair; whether the reading and value exist is checked once all are read."""
    name, equals, value = text.partition("=")
    if not (name and equals):
        raise argparse.ArgumentTypeError(f"a reading is NAME=VALUE; got {text!r}")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dli-emulator",
        description=__doc__,
        epilog=EPILOG
        + "".join(
            textwrap.fill(line, 100, initial_indent="  ", subsequent_indent="      ") + "\n" for line in describe()
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: %(default)s); an address other machines reach needs --allow-remote",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host such as 0.0.0.0: the /_emulator/* control endpoints have no authentication",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 (the default) picks a free one")
    parser.add_argument(
        "--access-key",
        metavar="AK",
        default=DEFAULT_ACCESS_KEY,
        help="the access key ID that AK/SK-signed requests must use (default: %(default)s)",
    )
    parser.add_argument(
        "--secret-key",
        metavar="SK",
        default=DEFAULT_SECRET_KEY,
        help="the secret access key that signatures are checked with (default: a fixed test key)",
    )
    parser.add_argument(
        "--project-id",
        metavar="ID",
        default=DEFAULT_PROJECT_ID,
        help="the only project ID the API accepts in its paths and IAM token scopes (default: %(default)s)",
    )
    parser.add_argument(
        "--user",
        metavar="DOMAIN/NAME:PASSWORD",
        default=f"{DEFAULT_DOMAIN}/{DEFAULT_USER}:{DEFAULT_PASSWORD}",
        help="the IAM user that POST /v3/auth/tokens accepts (default: %(default)s)",
    )
    parser.add_argument(
        "--starting-seconds",
        metavar="S",
        type=float,
        default=1.0,
        help="how long a new job stays 'starting' (a SQL job: 'LAUNCHING') (default: %(default)s)",
    )
    parser.add_argument(
        "--running-seconds",
        metavar="S",
        type=float,
        default=5.0,
        help="how long a job then stays 'running' before it ends 'success' ('FINISHED') (default: %(default)s)",
    )
    parser.add_argument(
        "--latency", metavar="S", type=float, default=0.0, help="seconds added to every API request (default: 0)"
    )
    parser.add_argument(
        "--lockout-seconds",
        metavar="S",
        type=float,
        default=300.0,
        help="how long an access key is locked after 5 failed AK/SK authentications in a row (default: %(default)s)",
    )
    parser.add_argument(
        "--rate-limit",
        metavar="N",
        type=float,
        default=None,
        help="requests per second allowed per API; past it, 429 APIGW.0308 (default: no limit)",
    )
    parser.add_argument(
        "--no-retry-after", action="store_true", help="send the rate limit's 429s without a Retry-After header"
    )
    parser.add_argument(
        "--reading",
        metavar="NAME=VALUE",
        type=reading,
        action="append",
        default=[],
        help="play one reading of DLI where its documentation leaves the behaviour open (repeatable; listed below)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    domain_user, _, password = args.user.partition(":")
    domain, _, user = domain_user.partition("/")
    if not (domain and user and password):
        parser.error("--user must look like DOMAIN/NAME:PASSWORD")
    try:
        readings = Readings.of(dict(args.reading))
    except ValueError as error:
        parser.error(f"--reading: {error}")
    exposed = not is_loopback(args.host)
    if exposed and not args.allow_remote:
        parser.error(
            f"--host {args.host} is reachable from other machines, and the emulator's /_emulator/* control "
            "endpoints have no authentication: bind to 127.0.0.1, or pass --allow-remote if you mean it"
        )

    emulator = DLIEmulator(
        host=args.host,
        port=args.port,
        project_id=args.project_id,
        access_keys={args.access_key: args.secret_key},
        users={(domain, user): password},
        starting_seconds=args.starting_seconds,
        running_seconds=args.running_seconds,
        latency=args.latency,
        lockout_seconds=args.lockout_seconds,
        rate_limit=args.rate_limit,
        rate_limit_retry_after=not args.no_retry_after,
        readings=readings,
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with emulator:
        if exposed:
            print(EXPOSED_WARNING.format(host=args.host), file=sys.stderr, flush=True)
        print(f"DLI emulator listening on {emulator.url} (project {args.project_id})", flush=True)
        # A line that works when pasted into a shell: without export, airflow would not see it.
        print(f"export AIRFLOW_CONN_DLI_DEFAULT={shlex.quote(json.dumps(emulator.connection()))}", flush=True)
        stop.wait()
    print("DLI emulator stopped", flush=True)


if __name__ == "__main__":
    main()
