"""monitor and runs show the ledger: cost so far per attempt, the attempts and the savings."""

from __future__ import annotations

import pytest
from rich.console import Console

from common.attempts import new_attempt
from common.state_doc import new_state
from common.state_store import StateStore
from common.timeutil import iso
from control.backend import Clients
from control.cli.live import view_line, view_table
from control.cli.tables import runs_table
from control.monitor import Monitor
from control.runs import read_run

RUN_ID = "20261125-140502"


def _first_attempt(clock, price: float) -> dict:
    return new_attempt(
        attempt=1,
        instance_id="i-00000000000000001",
        instance_type="g5.xlarge",
        market="spot",
        availability_zone="us-east-1a",
        price_per_hour=price,
        price_source="spot-history",
        launched_at=iso(clock()),
    )


def _text(renderable) -> str:
    out = Console(record=True, width=200)
    out.print(renderable)
    return out.export_text()


def test_monitor_prices_the_state_files_attempts_so_far_and_shows_the_savings(s3, bucket, local_aws, clock):
    store = StateStore(s3, bucket, "dev", clock=clock)
    store.acquire(new_state(env="dev", run_id=RUN_ID, market="spot", total_steps=10, now=iso(clock())))
    store.add_attempt(RUN_ID, _first_attempt(clock, 0.36))
    mon = Monitor(Clients(s3=s3, ec2=local_aws.client("ec2"), sts=None), bucket, "dev", clock=clock)
    clock.tick(3600)
    view = mon.poll()
    ebs = 0.08 * 100 * 3600 / 2_592_000  # no stored run spec: the schema's 100 GB root volume
    assert view.attempts == 1 and view.cost_usd == pytest.approx(0.36 + ebs, abs=1e-4)
    assert view.savings_usd == pytest.approx(1.006 - 0.36, abs=1e-4)
    assert "attempts=1" in view_line(view) and "saved=$0.6460" in view_line(view)
    table = _text(view_table(view))
    assert "so far over 1 attempt (spot), saved $0.6460 (64%) vs on-demand" in table

    run = read_run(s3, bucket, "dev", RUN_ID, state=store.read().doc, clock=clock)
    listed = _text(runs_table([run], "dev"))
    assert "so far" in listed and "$0.6460" in listed
