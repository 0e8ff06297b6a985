"""The whole local stack in one command: Graph emulator, identity emulator, Azurite, the dev host.

The function runs unchanged: it reads GRAPH_ENDPOINT, IDENTITY_ENDPOINT and IDENTITY_HEADER from
the environment like it does in Azure, pointed here at the emulators on loopback, so the real
azure-identity code fetches its token from the identity emulator. Azurite (devtools.azurite, on
free loopback ports, its data in a temporary folder removed on exit) is the storage account:
AzureWebJobsStorage is set to its connection string unless the environment already sets it.

    python -m devtools.run [--port 7071] [--graph-port 7072] [--identity-port 7073]
                           [--write-limit N [--write-window SECONDS]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from types import FrameType

from devtools.azurite import Azurite, ensure_installed
from devtools.graph_emulator import DEMO_ASSIGNED_ID, GraphEmulator
from devtools.host import configure_logging, serve
from devtools.identity_emulator import IdentityEmulator

# The Functions host's storage account setting (queue and timer triggers use it by default).
STORAGE_SETTING = "AzureWebJobsStorage"


def banner(base: str, graph: GraphEmulator, azurite: Azurite) -> str:
    storage = (
        STORAGE_SETTING
        if os.environ.get(STORAGE_SETTING) == azurite.connection_string
        else f"unused: {STORAGE_SETTING} was already set and is kept"
    )
    return f"""
Local stack ready.
  Graph emulator:    {graph.base_url}  (faults: POST {graph.base_url}/_emulator/faults)
  Identity emulator: {os.environ["IDENTITY_ENDPOINT"]}
  Azurite storage:   {storage}
    blobs:  {azurite.blob_endpoint}
    queues: {azurite.queue_endpoint}
    tables: {azurite.table_endpoint}

Try it:
  curl -i -X POST {base}/api/UnassignUser \\
       -H 'Content-Type: application/json' \\
       -d '{{"deviceId": "{DEMO_ASSIGNED_ID}", "ticketId": "INC0012345"}}'

Reset the demo devices: curl -X POST {graph.base_url}/_emulator/reset
Stop with Ctrl+C.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the function against local emulators.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--graph-port", type=int, default=7072)
    parser.add_argument("--identity-port", type=int, default=7073)
    parser.add_argument(
        "--write-limit", type=int, default=None, help="Graph emulator: 429 beyond N writes/window"
    )
    parser.add_argument("--write-window", type=float, default=20.0, help="seconds (default 20)")
    args = parser.parse_args(argv)
    configure_logging()
    # Like Ctrl+C: a terminated stack still stops Azurite (its own process) on the way out.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    with contextlib.suppress(KeyboardInterrupt), contextlib.ExitStack() as running:
        ensure_installed()
        azurite = running.enter_context(Azurite())
        graph = running.enter_context(
            GraphEmulator(
                host=args.host,
                port=args.graph_port,
                write_limit=args.write_limit,
                write_window_seconds=args.write_window,
            )
        )
        identity = running.enter_context(IdentityEmulator(host=args.host, port=args.identity_port))
        os.environ.update(
            GRAPH_ENDPOINT=graph.base_url,
            IDENTITY_ENDPOINT=identity.endpoint,
            IDENTITY_HEADER=identity.identity_header,
            GRAPH_CREDENTIAL="managed_identity",
        )
        os.environ.setdefault(STORAGE_SETTING, azurite.connection_string)
        os.environ.pop("AZURE_CLIENT_ID", None)

        def ready(base: str) -> None:
            # A job's status URL points back here (in Azure: the app's own host name).
            os.environ.setdefault("JOB_PUBLIC_BASE_URL", base)
            print(banner(base, graph, azurite), flush=True)

        asyncio.run(serve(args.host, args.port, None, ready))


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    main()
