"""S3 faults the retries cannot absorb, and access denied on one prefix: the run fails truly.

- Past the retries: every PutObject under the run's ``models/`` answers 503 SlowDown; the
  trainer retries each upload 6 times (1 .. 32 s) and gives up. The run must end ``failed``
  with ``_FAILED_UPLOAD``, a message naming the IAM action and the key, the checkpoints
  uploaded before intact, nothing billing, the lock released.
- A read timeout beside it: the forecasts.json PUT's answer held past the client's 60 s read
  timeout while the model upload backs off (the results uploads run in parallel): it is retried
  and lands whole.
- Access denied: every request of the instance role under ``cached-datasets/training-data/``
  answers 403 AccessDenied (S3's XML error). Not retried; one line naming the prefix and the
  action to grant; the records and logs still uploaded (they live under the env's prefix).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from common import layout
from reliability import harness as H
from reliability import record
from reliability.s3faults import Caller, FaultProxy, Kind, Rule, in_front_of

pytestmark = pytest.mark.slow
PUTS = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")


@pytest.fixture
def chained(world: Any) -> Iterator[tuple[Any, FaultProxy]]:
    """The harness's world with the fault proxy in front of it (every caller goes through it)."""
    with in_front_of(world) as pair:
        yield pair


def instance_caller(world: Any) -> Any:
    outputs = json.loads(world.local_dir.stack_file(world.env).read_text())
    outputs = outputs.get("outputs", outputs)
    return Caller.role(str(outputs["instance_role_arn"]).rsplit("/", 1)[1])


@pytest.mark.row("s3-exhausted@results_sync")
@pytest.mark.row("s3-timeout@results_sync")
def test_uploads_failing_past_the_retries_fail_the_run_truly(chained):
    world, proxy = chained
    run = world.launch(H.matrix_spec(steps=20, checkpoint_interval=10))
    proxy.probe = lambda: (world.state() or {}).get("status", "")
    caller = instance_caller(world)
    proxy.add(Rule(kind=Kind.SLOW_DOWN, operations=PUTS, key_prefix=run.paths.models, caller=caller))
    # beside it (the results uploads run in parallel): one answer held past the 60 s read timeout
    held = proxy.add(
        Rule(kind=Kind.READ_TIMEOUT, operations=PUTS, key=run.paths.forecasts, caller=caller, count=1)
    )
    H.wait_until(lambda: proxy.injected, 300, "the first model upload")
    before = H.snapshot(world, run.run_id)  # the checkpoints and configs uploaded before the fault
    out = H.settle(world, run, before=before, row="s3-exhausted@results_sync")
    detail = f"{out}\n{world.logs()}"
    assert {i.status for i in proxy.injected} == {"results_sync"}, detail
    assert out.status == "failed", detail
    assert out.orphans == [] and out.lost == [] and out.checked >= 2, detail
    assert out.state is None, detail  # the lock released
    assert out.sentinel is not None and out.sentinel["status"] == "failed_upload", detail
    assert "s3:PutObject" in out.message and run.paths.models in out.message, out.message
    assert "SlowDown" in out.message and "gave up after 6 retries" in out.message, out.message
    terminal = [e for e in out.training["errors"] if e["severity"] == "critical"]
    assert terminal and terminal[0]["retry_count"] == 6, out.training["errors"]
    first = next(i.request for i in proxy.injected if i.kind is Kind.SLOW_DOWN)
    tries = [r for r in proxy.requests("PutObject", first.key, first.caller) if r.key == first.key]
    assert len(tries) >= 7, tries  # the first try and its 6 retries
    record.note("s3-exhausted@results_sync", f"{len(tries)} tries got SlowDown; the user read: {out.message}")
    # the held upload timed out, was retried and landed whole while the model upload backed off
    assert held.fired == 1, detail
    puts = [r for r in proxy.requests("PutObject", run.paths.forecasts) if r.key == run.paths.forecasts]
    assert len(puts) >= 2, puts
    timeouts = [e for e in out.training["errors"] if "ReadTimeout" in e["message"]]
    assert timeouts and run.paths.forecasts in timeouts[0]["message"], out.training["errors"]
    [local] = (world.local_dir.instance_dir(run.instance_id) / "root").rglob("evaluation/forecasts.json")
    body = world.s3.get_object(Bucket=world.bucket, Key=run.paths.forecasts)["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(local.read_bytes()).digest()
    record.count(record.Total.ARTIFACTS_CHECKED)
    record.note("s3-timeout@results_sync", f"retried after: {timeouts[0]['message']}; landed whole")


@pytest.mark.row("s3-denied@data_sync")
def test_access_denied_on_the_data_prefix_is_one_line_naming_prefix_and_action(chained):
    world, proxy = chained
    run = world.launch(H.matrix_spec(steps=10, checkpoint_interval=10))
    proxy.probe = lambda: (world.state() or {}).get("status", "")
    proxy.add(Rule(kind=Kind.ACCESS_DENIED, key_prefix=layout.TRAINING_DATA, caller=instance_caller(world)))
    out = H.settle(world, run, row="s3-denied@data_sync")
    detail = f"{out}\n{world.logs()}"
    assert proxy.injected and {i.status for i in proxy.injected} == {"data_sync"}, detail
    assert out.status == "failed" and out.orphans == [] and out.state is None, detail
    [terminal] = [e for e in out.training["errors"] if e["error_class"] == "terminal"]
    assert terminal["component"] == "data_sync" and terminal["retry_count"] == 0, terminal
    first = proxy.injected[0].request
    mine = [r for r in proxy.requests(first.operation, first.key, first.caller) if r.key == first.key]
    assert len(mine) == 1, mine  # not retried
    line = terminal["message"]
    assert "\n" not in line and "access denied" in line, line
    assert f"s3://{world.bucket}/{layout.TRAINING_DATA}" in line and "s3:ListBucket" in line, line
    assert "s3:ListBucket" in out.message and layout.TRAINING_DATA in out.message, out.message
    phases = {p["name"]: p["status"] for p in out.training["phases"]}
    assert phases["data_sync"] == "failed" and phases.get("training") in (None, "skipped"), phases
    keys = {
        o["Key"] for o in world.s3.list_objects_v2(Bucket=world.bucket, Prefix=run.paths.logs)["Contents"]
    }
    assert run.paths.training_log in keys and run.paths.cleanup_status in keys, keys
    record.note("s3-denied@data_sync", f"the user read: {out.message}")
