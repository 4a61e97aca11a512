"""Local mode's batch client: moto's API with the local executor's record as each job's truth."""

from __future__ import annotations

from control import local_batch
from control.local_batch_client import LocalBatchClient
from control.localdir import LocalDir
from control.sweep_jobs import JobStatus, active_jobs, describe_jobs


def client(local_aws, tmp_path, started):
    def fake_execute(job_id, **kwargs):  # what the backend would start: recorded, not run
        started.append((job_id, kwargs["endpoint_url"]))
        return 0

    local_dir = LocalDir(tmp_path / ".local")
    batch = LocalBatchClient(
        local_aws.client("batch"), local_dir=local_dir, endpoint_url=local_aws.endpoint_url,
        region="us-east-1", env_vars=lambda: {"AWS_ACCESS_KEY_ID": "k"},
    )  # fmt: skip
    return batch, local_dir, fake_execute


def test_moto_says_succeeded_but_the_record_is_what_describe_and_list_answer(
    tmp_path, local_aws, moto_batch, monkeypatch
):
    started = []
    batch, local_dir, fake_execute = client(local_aws, tmp_path, started)
    monkeypatch.setattr(local_batch, "execute", fake_execute)
    job_id = batch.submit_job(
        jobName="dev-j", jobQueue=moto_batch.queue, jobDefinition=moto_batch.definition
    )["jobId"]
    assert started == [(job_id, local_aws.endpoint_url)]  # SubmitJob started the local job
    assert local_aws.client("batch").describe_jobs(jobs=[job_id])["jobs"][0]["status"] == "SUCCEEDED"  # moto
    local_batch.update(local_dir, job_id, status="RUNNING", attempts=[{"attempt": 1, "started_at": "t"}])
    facts = describe_jobs(batch, [job_id])[job_id]
    assert (facts.status, facts.attempts) == (JobStatus.RUNNING, 1)
    assert [j["jobId"] for j in active_jobs(batch, moto_batch.queue)] == [job_id]
    assert batch.list_jobs(jobQueue=moto_batch.queue, jobStatus="SUCCEEDED")["jobSummaryList"] == []
    local_batch.update(local_dir, job_id, status="FAILED", status_reason="Terminated by the user")
    facts = describe_jobs(batch, [job_id])[job_id]
    assert (facts.status, facts.reason) == (JobStatus.FAILED, "Terminated by the user")
    assert active_jobs(batch, moto_batch.queue) == []


def test_a_job_this_machine_never_ran_keeps_motos_answer_and_stops_reach_both(
    tmp_path, local_aws, moto_batch, monkeypatch
):
    batch, local_dir, _ = client(local_aws, tmp_path, [])
    job_id = local_aws.client("batch").submit_job(
        jobName="dev-k", jobQueue=moto_batch.queue, jobDefinition=moto_batch.definition
    )["jobId"]
    assert describe_jobs(batch, [job_id])[job_id].status is JobStatus.SUCCEEDED
    stopped = []
    monkeypatch.setattr(
        local_batch, "terminate", lambda jid, **kw: stopped.append((jid, kw["reason"])) or True
    )
    batch.terminate_job(jobId=job_id, reason="invoke kill")
    batch.cancel_job(jobId=job_id, reason="invoke kill")
    assert stopped == [(job_id, "invoke kill")] * 2
