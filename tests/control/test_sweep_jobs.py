"""Batch job states and stops against moto's Batch (jobs held where AWS would keep them)."""

from __future__ import annotations

import pytest

from control.sweep_jobs import JobStatus, active_jobs, describe_jobs, stop_job


def submit(aws, moto_batch, n=1):
    batch = aws.client("batch")
    return batch, [
        batch.submit_job(jobName=f"dev-j{i}", jobQueue=moto_batch.queue, jobDefinition=moto_batch.definition)[
            "jobId"
        ]
        for i in range(n)
    ]


def test_the_status_enum_is_batchs_and_answers_its_own_questions():
    import botocore.session

    model = botocore.session.get_session().get_service_model("batch")
    assert {s.value for s in JobStatus} == set(model.shape_for("JobStatus").enum)
    assert [s.value for s in JobStatus if s.cancels()] == ["SUBMITTED", "PENDING", "RUNNABLE"]
    assert [s.value for s in JobStatus if s.on_host()] == ["STARTING", "RUNNING"]
    assert [s.value for s in JobStatus if s.is_final()] == ["SUCCEEDED", "FAILED"]


def test_describe_reads_more_than_one_page_and_leaves_unknown_ids_out(local_aws, moto_batch):
    batch, ids = submit(local_aws, moto_batch, n=101)  # DescribeJobs takes at most 100 ids
    found = describe_jobs(batch, [*ids, "00000000-0000-0000-0000-000000000000"])
    assert set(found) == set(ids)
    assert found[ids[0]].parameters["run_id"] == "unset"  # the job definition's default


@pytest.mark.parametrize(
    ("held", "requested"), [("RUNNABLE", "cancel"), ("PENDING", "cancel"), ("STARTING", "terminate"),
                            ("RUNNING", "terminate")],
)  # fmt: skip
def test_a_queued_job_is_cancelled_and_one_on_a_host_terminated(local_aws, moto_batch, held, requested):
    batch, (job_id,) = submit(local_aws, moto_batch)
    moto_batch.hold(job_id, held)
    record = stop_job(batch, job_id, reason="killed by operator (invoke kill)")
    assert (record.requested, record.before) == (requested, JobStatus(held))
    # moto only flags the stop; what a describe then sees is recorded, not assumed
    assert record.observed is JobStatus(held) and not record.stopped and record.error is None
    moto_batch.honour_stops(job_id)  # as AWS: the stopped job ends FAILED
    again = stop_job(batch, job_id, reason="again")
    assert (again.requested, again.observed, again.stopped) == ("none", JobStatus.FAILED, True)
    assert describe_jobs(batch, [job_id])[job_id].reason == "killed by operator (invoke kill)"


def test_a_finished_or_unknown_job_gets_no_call(local_aws, moto_batch):
    batch, (job_id,) = submit(local_aws, moto_batch)  # moto: SUCCEEDED at once
    assert stop_job(batch, job_id, reason="r").requested == "none"
    gone = stop_job(batch, "00000000-0000-0000-0000-000000000000", reason="r")
    assert (gone.requested, gone.before, gone.observed) == ("none", None, None)


def test_active_jobs_asks_for_each_active_state(local_aws, moto_batch):
    batch, ids = submit(local_aws, moto_batch, n=3)
    moto_batch.hold(ids[0], "RUNNABLE")
    moto_batch.hold(ids[1], "RUNNING")
    assert sorted(j["jobId"] for j in active_jobs(batch, moto_batch.queue)) == sorted(ids[:2])
