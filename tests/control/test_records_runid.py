"""Two launches in one env within one second: the second is refused, never given the first's outputs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common import layout
from common.state_store import StateStore
from control.launch import launch

SECOND = datetime(2026, 11, 25, 14, 5, 2, 100_000, tzinfo=UTC)


@pytest.mark.row("records-run-id-distinct")
def test_a_second_launch_within_the_same_second_is_refused(backend, dev, monkeypatch):
    monkeypatch.setattr(backend, "start_instance", lambda **kw: None)
    first = launch(backend, env="dev", skip_doctor=True, clock=lambda: SECOND)
    assert first.result is not None and first.result.run_id == "20261125-140502"
    paths = layout.RunPaths(env="dev", run_id=first.result.run_id)
    s3 = backend.clients().s3
    spec_before = s3.get_object(Bucket=dev["bucket"], Key=paths.run_spec)["ETag"]
    StateStore(s3, dev["bucket"], "dev").release(first.result.run_id)  # the first run ended at once

    with pytest.raises(layout.RunIdTakenError, match="20261125-140502"):
        launch(backend, env="dev", skip_doctor=True, clock=lambda: SECOND.replace(microsecond=900_000))
    assert s3.get_object(Bucket=dev["bucket"], Key=paths.run_spec)["ETag"] == spec_before
    assert StateStore(s3, dev["bucket"], "dev").read() is None  # the refusal took no lock
