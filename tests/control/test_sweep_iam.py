"""The calls a sweep makes, as its plan builds them, are what the operator's policy allows on AWS.

moto enforces no Batch resource ARN nor tag condition (and, under enforcement, matches Batch's
lower-case action names against no policy), so this proves the policy side with the evaluator
(``localaws.iam_eval``, AWS's rules) on the very requests ``plan_sweep`` makes.
"""

from __future__ import annotations

from datetime import UTC, datetime

from control.sweep_grid import load_grid
from control.sweep_plan import BatchTarget, SweepWorld, plan_sweep
from infra.outputs import read_outputs
from infra.spec import batch as spec_batch
from infra.spec import operator_access as spec_operator
from localaws.iam_calls import Call, Caller
from localaws.iam_eval import evaluate
from localaws.iam_requests import requests_for

ACCOUNT, REGION = "123456789012", "us-east-1"
OPERATOR = Caller(
    f"arn:aws:iam::{ACCOUNT}:user/op", f"arn:aws:iam::{ACCOUNT}:user/op", "AIDAOP", ACCOUNT, "op"
)


class Tags:
    def __init__(self, tags):
        self.tags = tags

    def batch_job_tags(self, _job_id):
        return self.tags


def policy(env="dev"):
    return spec_operator.operator_policy(
        spec_operator.OperatorScope(
            env=env, region=REGION, account_id=ACCOUNT, bucket_arn="arn:aws:s3:::b",
            launch_template_arn=f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/lt-1",
            role_arn=f"arn:aws:iam::{ACCOUNT}:role/chronos-{env}-instance",
            vpc_arn=f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc/vpc-1", batch=True,
        )
    )  # fmt: skip


def allowed(call, facts=None, env="dev"):
    found = requests_for(call, OPERATOR, facts or Tags({}))
    return bool(found) and all(evaluate([policy(env)], r.request).effect == "Allow" for r in found)


def plan(tmp_path):
    grid = tmp_path / "sweep.toml"
    grid.write_text('[grid]\n"model.seed" = [1, 2]\n')
    names = spec_batch.names("dev")
    outputs = read_outputs(
        {
            "bucket": "b", "region": REGION, "env": "dev", "account_id": ACCOUNT,
            "subnets_by_az": {"us-east-1a": "subnet-1"}, "security_group_id": "sg-1",
            "launch_template_id": "lt-1",
            "instance_profile_arn": "arn:aws:iam::1:x", "instance_role_arn": "arn:aws:iam::1:role/x",
            "operator_policy_arn": "arn:aws:iam::1:policy/x",
        }
    )  # fmt: skip
    world = SweepWorld(
        env="dev", sweep_id="20261201-210502", now=datetime(2026, 12, 1, 21, 5, 2, tzinfo=UTC), local=False,
        outputs=outputs, target=BatchTarget(job_queue=names["queue"], job_definition=names["job_definition"]),
        code_bundle=b"", code_key="cached-datasets/scripts/bundle-x.tar.gz", code_skip_reason=None,
        data_files={"cached-datasets/training-data/": 1},
    )  # fmt: skip
    return plan_sweep(load_grid(grid, env="dev"), world)


def test_every_submitjob_of_a_sweep_is_allowed_with_its_tags(tmp_path):
    for member in plan(tmp_path).members:
        call = Call("batch", "SubmitJob", REGION, dict(member.submit_request))
        assert allowed(call), member.submit_request
        assert not allowed(call, env="prod")  # another env's operator may not submit to dev's queue


def test_kill_and_verify_calls_are_allowed(tmp_path):
    job_tags = dict(plan(tmp_path).members[0].submit_request["tags"])
    for op in ("CancelJob", "TerminateJob"):
        assert allowed(Call("batch", op, REGION, {"jobId": "0b1c", "reason": "killed"}), Tags(job_tags))
    scale = {"computeEnvironment": "chronos-dev-batch-spot", "state": "DISABLED"}
    calls = [
        ("DescribeJobs", {"jobs": ["0b1c"]}),
        ("ListJobs", {"jobQueue": "chronos-dev-batch-queue"}),
        ("DescribeComputeEnvironments", {}),
        ("UpdateComputeEnvironment", scale),
    ]
    for op, params in calls:
        assert allowed(Call("batch", op, REGION, params)), op
