"""Run moto's server in the foreground (``python -m localaws serve``) for ``invoke local.up``.

It binds 127.0.0.1 only, writes ``{"endpoint_url", "pid", "port", "region"}`` to
``--state-file`` once it answers, and stops cleanly on SIGTERM/SIGINT (removing
the state file it wrote).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from common import logfmt
from localaws import moto

log = logging.getLogger(__name__)


def serve(*, port: int, state_file: Path | None, stop: threading.Event | None = None) -> int:
    """Serve until ``stop`` is set (or a signal arrives). Returns an exit code."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    stop = stop or threading.Event()
    aws = moto.start(port=port)
    if not aws.is_up():
        log.error("moto did not come up on port %s", port)
        aws.stop()
        return 1
    record = {
        "endpoint_url": aws.endpoint_url,
        "pid": os.getpid(),
        "port": int(aws.endpoint_url.rsplit(":", 1)[1]),
        "region": aws.region,
    }
    if state_file is not None:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(state_file)
    log.info("local AWS listening at %s (pid %d)", aws.endpoint_url, os.getpid())
    try:
        stop.wait()
    finally:
        aws.stop()
        if state_file is not None and state_file.exists():
            try:
                if json.loads(state_file.read_text()).get("pid") == os.getpid():
                    state_file.unlink()
            except (OSError, ValueError):
                pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localaws serve", description="moto server on 127.0.0.1 for local mode"
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0 picks a free one)")
    parser.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help="write the endpoint and pid here once the server answers",
    )
    args = parser.parse_args(argv)
    logfmt.configure(logging.INFO)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return serve(port=args.port, state_file=args.state_file, stop=stop)
