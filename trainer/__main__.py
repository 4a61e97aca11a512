"""``python -m trainer run``: what the instance runs after boot.

::

    python -m trainer run --bucket B --env E --run-id R [--region us-east-1]
        [--device cuda|cpu] [--imds-endpoint URL] [--local] [--workdir DIR] [--batch]

The S3/EC2 endpoint comes from ``AWS_ENDPOINT_URL`` (local mode) or the SDK
defaults. Exit code 0 only when the run completed normally; every code is in
``common/exitcodes.py``. SIGTERM/SIGINT (an OS shutdown) stop the run
like a spot notice: checkpoint, upload, finalize ``interrupted``, power off.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from trainer.instance import DEFAULT_ENDPOINT


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", description="Chronos-2 training on this instance.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the phases of one training run, then power off")
    r.add_argument("--bucket", required=True, help="the training bucket")
    r.add_argument("--env", required=True, help="environment name (dev, prod ...)")
    r.add_argument("--run-id", required=True, help="YYYYMMDD-HHMMSS")
    r.add_argument("--region", default="us-east-1")
    r.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cpu only in local mode: the GPU check is skipped and recorded",
    )
    r.add_argument("--imds-endpoint", default=DEFAULT_ENDPOINT, help="IMDSv2 endpoint (a fake one locally)")
    r.add_argument(
        "--local",
        action="store_true",
        help="local mode: base model 'auto' is the tiny one; outside a local instance, power off "
        "through the EC2 API",
    )
    r.add_argument("--workdir", type=Path, default=None, help="local work directory (default: under TMPDIR)")
    r.add_argument(
        "--batch",
        action="store_true",
        help="an AWS Batch job (trainer/batch_entry.sh): identity from AWS_BATCH_JOB_ID, no poweroff",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from common import logfmt
    from common.status import RunStatus
    from trainer.context import Deps, RunOptions
    from trainer.run import Driver, run_driver
    from trainer.stopping import StopRequest

    args = parser().parse_args(argv)
    logfmt.configure(logging.INFO, sys.stderr)
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    opts = RunOptions(
        bucket=args.bucket,
        env=args.env,
        run_id=args.run_id,
        region=args.region,
        device=args.device,
        imds_endpoint=args.imds_endpoint,
        local=args.local,
        workdir=args.workdir,
        batch=args.batch,
    )

    driver = Driver(opts, Deps())

    def on_signal(signum: int, _frame: object) -> None:
        driver.request_stop(
            StopRequest(
                status=RunStatus.INTERRUPTED,
                source="signal",
                reason=f"{signal.Signals(signum).name}: the machine is shutting down",
            )
        )

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return run_driver(driver)


if __name__ == "__main__":
    sys.exit(main())
