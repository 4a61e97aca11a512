"""invoke logs RUN_ID --console: the live instance's console, and one line when there is none."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from botocore.exceptions import ClientError

from common.runspec import from_dict
from control import console
from control.launch_apply import apply_launch
from control.launch_plan import plan_launch
from control.launch_world import gather_world

NOW = datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC)


def _launched(backend):
    """A launched run (no supervisor: the test writes the instance's console itself)."""
    spec = from_dict({"instance": {"market": "on-demand"}})
    plan = plan_launch(spec, gather_world(backend, spec, env="dev", now=NOW))
    return apply_launch(plan, backend.clients(), clock=lambda: NOW)


def test_the_live_instances_console(backend, dev, local_dir, cli):
    result = _launched(backend)
    path = local_dir.instance_dir(result.instance_id) / "console.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("cloud-init: boot\nbootstrap: fetching code bundle\nbootstrap: python -m trainer run\n")
    con = console.console_output(backend, env="dev", run_id=result.run_id, tail=2)
    assert con.instance_id == result.instance_id and con.state == "running" and con.problem is None
    assert con.text == "bootstrap: fetching code bundle\nbootstrap: python -m trainer run"
    assert con.source == str(path)
    proc = cli("logs", result.run_id, "--env=dev", "--local", "--console")
    assert proc.returncode == 0, proc.stderr
    assert f"console of {result.instance_id} (running)" in proc.stdout and "cloud-init: boot" in proc.stdout


def test_from_the_launch_record_once_the_lock_is_gone(backend, dev):
    from common.state_store import StateStore

    result = _launched(backend)
    StateStore(backend.clients().s3, dev["bucket"], "dev").release(result.run_id)
    con = console.console_output(backend, env="dev", run_id=result.run_id)
    assert con.instance_id == result.instance_id
    assert "no console output yet" in con.problem  # nothing printed yet


def test_a_terminated_instance_points_to_the_s3_logs(backend, dev, local_aws, cli):
    result = _launched(backend)
    local_aws.client("ec2").terminate_instances(InstanceIds=[result.instance_id])
    con = console.console_output(backend, env="dev", run_id=result.run_id)
    assert (
        con.text == ""
        and f"instance {result.instance_id} of run {result.run_id} is terminated" in con.problem
    )
    assert f"`invoke logs {result.run_id} --env=dev --local`" in con.problem
    proc = cli("logs", result.run_id, "--env=dev", "--local", "--console")
    assert (
        proc.returncode == 0 and "is terminated" in proc.stdout and len(proc.stdout.strip().splitlines()) <= 2
    )


def test_a_run_without_an_instance(backend, dev):
    con = console.console_output(backend, env="dev", run_id="20261125-130000")
    assert con.instance_id is None and "has no recorded instance" in con.problem
    assert "invoke logs 20261125-130000 --env=dev --local" in con.problem


class _Ec2:
    """GetConsoleOutput as AWS answers it: base64; Latest refused on a non-Nitro instance."""

    def __init__(self, latest_ok: bool) -> None:
        self.latest_ok, self.calls = latest_ok, []

    def get_console_output(self, **kwargs):
        self.calls.append(kwargs)
        if kwargs.get("Latest") and not self.latest_ok:
            raise ClientError(
                {"Error": {"Code": "UnsupportedOperation", "Message": "no"}}, "GetConsoleOutput"
            )
        return {"InstanceId": "i-1", "Output": base64.b64encode(b"[ 0.0] Linux\nhello\n").decode()}


def test_get_console_output_is_decoded_and_latest_falls_back():
    nitro = _Ec2(latest_ok=True)
    assert console._get_console(nitro, "i-1") == "[ 0.0] Linux\nhello\n"
    assert nitro.calls == [{"InstanceId": "i-1", "Latest": True}]
    older = _Ec2(latest_ok=False)
    assert console._get_console(older, "i-1").endswith("hello\n")
    assert older.calls == [{"InstanceId": "i-1", "Latest": True}, {"InstanceId": "i-1"}]
