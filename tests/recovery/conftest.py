"""Fixtures: a fake Cloud (recovery_fakes) over the moto server's S3, and a run to recover."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# --import-mode=importlib puts no test directory on sys.path: this one's helpers go there.
sys.path.insert(0, str(Path(__file__).parent))
from recovery_fakes import BASE, ENV, RUN, FakeCloud, placements  # noqa: E402

from common import attempts as att
from common.layout import RunPaths
from common.placement import LaunchRequest
from common.state_doc import new_state
from common.status import RunStatus
from common.timeutil import iso


@pytest.fixture
def cloud(s3, bucket, clock) -> FakeCloud:
    return FakeCloud(s3, bucket, clock)


@pytest.fixture
def start_run(cloud, clock):
    """A run on instance i-0001 in us-east-1a, in ``status``, its launch request stored."""

    def start(
        status: RunStatus = RunStatus.TRAINING, *, max_recoveries: int = 3, max_runtime: int = 60, **extra
    ):
        store = cloud.store(ENV)
        now = iso(clock())
        doc = new_state(env=ENV, run_id=RUN, market="spot", total_steps=100, now=now)
        doc.update(att.policy(max_recoveries=max_recoveries, max_runtime_minutes=max_runtime), **extra)
        snap = store.acquire(doc)
        first = att.new_attempt(
            attempt=1,
            instance_id="i-0001",
            instance_type="g5.xlarge",
            market="spot",
            availability_zone="us-east-1a",
            price_per_hour=0.3,
            price_source="spot-history",
            launched_at=now,
        )
        snap = store.add_attempt(RUN, first, snapshot=snap)
        cloud.add_instance("i-0001")
        for s in (RunStatus.DATA_SYNC, RunStatus.TRAINING, RunStatus.RESULTS_SYNC):
            if snap.status is status:
                break
            snap = store.transition(RUN, s, snapshot=snap)
        if status is RunStatus.INTERRUPTED:
            snap = store.transition(RUN, RunStatus.INTERRUPTED, reason="spot interruption", snapshot=snap)
        request = LaunchRequest(
            run_id=RUN,
            env=ENV,
            region="us-east-1",
            bucket=cloud.bucket,
            local=True,
            market="spot-then-on-demand",
            base=BASE,
            placements=placements(),
        )
        cloud.write_json(RunPaths(env=ENV, run_id=RUN).launch_request, request.to_dict())
        return snap

    return start
