"""The load tests' counters can fail: each finds a leak planted for it (reliability/load.py)."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from common import layout
from localaws import moto
from reliability.load import (
    CallLog,
    Gate,
    LockRace,
    ProcessCensus,
    bucket_keys,
    cloud_census,
    local_processes,
    volumes,
)

ENV = "dev"


def test_a_thread_an_open_file_and_a_child_started_after_the_baseline_are_each_a_leak(tmp_path):
    before = ProcessCensus.take()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="planted-thread")
    thread.start()
    handle = open(tmp_path / "planted.txt", "w")  # noqa: SIM115 - kept open on purpose
    child = subprocess.Popen(["sleep", "30"])
    try:
        leaks = ProcessCensus.take().leaks_since(before)
    finally:
        stop.set()
        thread.join()
        handle.close()
        child.kill()
        child.wait()
    assert "thread 'planted-thread'" in leaks
    assert any(" more OS thread(s) " in item for item in leaks), leaks
    assert f"open {tmp_path / 'planted.txt'}" in leaks
    assert any(item.startswith(f"child process {child.pid} ") for item in leaks), leaks
    after = ProcessCensus.take().leaks_since(before)  # all of it gone again (other tests' threads may come)
    assert [x for x in after if "planted" in x or f"process {child.pid} " in x] == [], after


def test_a_child_that_exited_unwaited_is_a_leak_until_it_is_reaped(tmp_path):
    before = ProcessCensus.take()
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
        k.startswith(f"{child.pid} zombie") for k in ProcessCensus.take().children
    ):
        time.sleep(0.05)
    assert f"child process {child.pid} zombie" in " ".join(ProcessCensus.take().leaks_since(before))
    child.wait()
    assert [x for x in ProcessCensus.take().leaks_since(before) if f"process {child.pid} " in x] == []


def test_a_process_with_the_local_folder_in_its_command_line_or_cwd_is_found_with_its_children(tmp_path):
    root = tmp_path / ".local"
    (root / "instances").mkdir(parents=True)
    named = subprocess.Popen(["bash", "-c", "sleep 30; true", str(root / "x")])  # the folder as an argument
    inside = subprocess.Popen(["bash", "-c", "sleep 30 & wait"], cwd=root / "instances")
    try:
        deadline = time.monotonic() + 30
        found = []
        while time.monotonic() < deadline and len(found) < 4:
            found = local_processes(root, server_pid=named.pid)
            time.sleep(0.1)
        by_pid = {p.pid: p for p in found}
        assert by_pid[named.pid].role == "local-aws"  # the pid the world names as its server
        assert by_pid[inside.pid].role == "instance"
        assert len(found) == 4, [p.describe() for p in found]  # each bash's sleep child too
        assert local_processes(tmp_path / "elsewhere") == []
    finally:
        for proc in (named, inside):
            proc.kill()
            proc.wait()


def test_the_call_log_counts_accepted_writes_only(s3, bucket):
    log = CallLog()
    log.attach(s3)
    key = layout.state_key(ENV)
    s3.put_object(Bucket=bucket, Key=key, Body=b"{}", IfNoneMatch="*")
    with pytest.raises(ClientError):
        s3.put_object(Bucket=bucket, Key=key, Body=b"{}", IfNoneMatch="*")  # 412: changed nothing
    s3.get_object(Bucket=bucket, Key=key)
    s3.list_objects_v2(Bucket=bucket)
    assert [(c.operation, c.status, c.condition) for c in log.calls] == [
        ("PutObject", 200, "IfNoneMatch"),
        ("PutObject", 412, "IfNoneMatch"),
        ("GetObject", 200, None),
        ("ListObjectsV2", 200, None),
    ]
    assert [(c.operation, c.key) for c in log.writes()] == [("PutObject", key)]
    assert bucket_keys(s3, bucket) == {key}


def test_the_cloud_census_names_a_live_instance_a_volume_and_the_lock(local_aws, s3, bucket):
    ec2 = local_aws.client("ec2")
    tags = [{"ResourceType": "instance", "Tags": [{"Key": "Environment", "Value": ENV}]}]
    [inst] = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, TagSpecifications=tags)[
        "Instances"
    ]
    vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    s3.put_object(Bucket=bucket, Key=layout.state_key(ENV), Body=b'{"run_id": "20261201-120000"}')
    census = cloud_census(ec2, s3, env=ENV, bucket=bucket)
    assert census.instances == (f"{inst['InstanceId']} running",) and census.instances_ever == 1
    assert census.lock == "20261201-120000"
    assert f"{vol} available" in volumes(ec2)
    assert len(census.leaks()) == 2
    ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])
    s3.delete_object(Bucket=bucket, Key=layout.state_key(ENV))
    assert cloud_census(ec2, s3, env=ENV, bucket=bucket).leaks() == []
    assert cloud_census(ec2, s3, env="other", bucket=bucket).instances_ever == 0


def test_a_gate_holds_until_every_party_arrived_or_withdrew():
    gate = Gate(3, timeout_s=60)
    passed: list[str] = []
    threads = [threading.Thread(target=lambda n=n: (gate.wait(), passed.append(n))) for n in "ab"]
    for t in threads:
        t.start()
    time.sleep(0.3)
    assert passed == []  # two of three: held
    gate.withdraw()
    for t in threads:
        t.join(30)
    assert sorted(passed) == ["a", "b"] and not gate.complete


def test_the_lock_race_makes_every_launch_send_its_lock_create_together(s3, bucket):
    """Four threads read the state file and create the lock through one race: one wins."""
    race = LockRace(ENV, 4, timeout_s=60)
    key = layout.state_key(ENV)
    results: list[int] = []

    def launch() -> None:
        client_log = CallLog()
        client = moto.attach(s3.meta.endpoint_url).client("s3")  # one per thread, as each launch has its own
        client_log.attach(client)
        race.attach(client)
        try:
            with contextlib.suppress(ClientError):
                client.get_object(Bucket=bucket, Key=key)
            with contextlib.suppress(ClientError):
                client.put_object(Bucket=bucket, Key=key, Body=b"{}", IfNoneMatch="*")
        finally:
            race.done()
        results.extend(c.status for c in client_log.calls if c.condition == "IfNoneMatch")

    threads = [threading.Thread(target=launch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert race.read_gate.complete and race.write_gate.complete
    assert sorted(results) == [200, 412, 412, 412]


def _state(pid: int) -> str | None:
    """The process's state letter (R, S, Z ...); ``None`` once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def test_a_detached_local_process_is_not_left_unreaped_by_the_process_that_started_it(tmp_path):
    """``spawn_detached`` (the supervisor of every local instance, the recovery pump): once the
    detached process exits, the caller holds no zombie of it. A launch made in-process (the
    load tests, the recovery pump's relaunches) drops the ``Popen`` while the child runs, so
    nobody waits for it and it stays ``<defunct>`` in the process table until some later
    ``Popen`` happens to reap it."""
    from control.local_instance import spawn_detached

    before = ProcessCensus.take()
    pid = spawn_detached(["sleep", "1"], env_vars={}, log_path=tmp_path / "console.log").pid  # dropped
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _state(pid) not in (None, "Z"):  # until it exited
        time.sleep(0.1)
    assert [x for x in ProcessCensus.take().leaks_since(before) if f"process {pid} " in x] == []


def test_the_thread_waiting_for_an_allowed_child_is_no_leak_and_any_other_thread_is():
    before = ProcessCensus.take()
    child = subprocess.Popen(["sleep", "30"])
    stop = threading.Event()
    waiters = [
        threading.Thread(target=child.wait, name=f"reap-{child.pid}", daemon=True),
        threading.Thread(target=stop.wait, name="reap-999999999", daemon=True),  # no allowed child
    ]
    for t in waiters:
        t.start()
    try:
        leaks = ProcessCensus.take().leaks_since(before, allowed_pids=frozenset({child.pid}))
    finally:
        child.kill()
        stop.set()
        for t in waiters:
            t.join(30)
    assert "thread 'reap-999999999'" in leaks and not any(f"reap-{child.pid}" in x for x in leaks), leaks
