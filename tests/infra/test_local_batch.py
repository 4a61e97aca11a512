"""infra.local_batch: the sweep engine in the local AWS (moto), from the same spec as Pulumi's."""

from __future__ import annotations

from typing import Any

import pytest

from infra.local import ProvisionOptions, provision
from infra.outputs import BATCH_OUTPUT_KEYS, read_outputs
from infra.spec import batch as spec_batch


@pytest.fixture
def provisioned(local_aws: Any) -> tuple[Any, dict[str, Any]]:
    session = local_aws.session()
    options = ProvisionOptions(batch=True, local_principal_arn="arn:aws:iam::123456789012:user/host")
    outputs = provision(session, env="dev", endpoint_url=local_aws.endpoint_url, options=options)
    return local_aws, outputs


def test_without_batch_nothing_of_batch_exists(local_aws: Any) -> None:
    outputs = provision(local_aws.session(), env="dev", endpoint_url=local_aws.endpoint_url)
    assert not set(BATCH_OUTPUT_KEYS) & set(outputs)
    assert local_aws.client("batch").describe_compute_environments()["computeEnvironments"] == []


def test_the_env_gets_two_idle_free_environments_and_no_instance(provisioned) -> None:
    aws, outputs = provisioned
    assert read_outputs(outputs).has_batch
    batch = aws.client("batch")
    envs = {
        e["computeEnvironmentName"]: e for e in batch.describe_compute_environments()["computeEnvironments"]
    }
    assert set(envs) == {"chronos-dev-batch-spot", "chronos-dev-batch-on-demand"}
    for env in envs.values():
        resources = env["computeResources"]
        assert resources["minvCpus"] == 0 and resources.get("desiredvCpus", 0) == 0
        assert resources["securityGroupIds"] == [outputs["security_group_id"]]
        assert set(resources["subnets"]) == set(outputs["subnets_by_az"].values())
    # moto launches instances for min/desired vCPUs at creation: none here
    reservations = aws.client("ec2").describe_instances()["Reservations"]
    assert [i for r in reservations for i in r["Instances"]] == []


def test_the_queue_orders_spot_then_on_demand(provisioned) -> None:
    aws, outputs = provisioned
    (queue,) = aws.client("batch").describe_job_queues(jobQueues=[outputs["batch_job_queue"]])["jobQueues"]
    ordered = sorted(queue["computeEnvironmentOrder"], key=lambda o: o["order"])
    assert [o["computeEnvironment"].rsplit("/", 1)[1] for o in ordered] == [
        "chronos-dev-batch-spot",
        "chronos-dev-batch-on-demand",
    ]


def test_the_job_definition_runs_the_entry_script_on_cpu_under_the_job_role(provisioned) -> None:
    aws, outputs = provisioned
    (definition,) = aws.client("batch").describe_job_definitions(
        jobDefinitionName=outputs["batch_job_definition"], status="ACTIVE"
    )["jobDefinitions"]
    container = definition["containerProperties"]
    assert container["command"][2] == spec_batch.entry_script()
    assert container["jobRoleArn"] == outputs["batch_job_role_arn"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert (env["CHRONOS_DEVICE"], env["CHRONOS_LOCAL"], env["CHRONOS_BUCKET"]) == (
        "cpu",
        "1",
        outputs["bucket"],
    )
    trust = aws.client("iam").get_role(RoleName="chronos-dev-batch-job")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {
        "Service": "ecs-tasks.amazonaws.com",
        "AWS": "arn:aws:iam::123456789012:user/host",
    }


def test_a_second_run_changes_nothing(provisioned) -> None:
    aws, outputs = provisioned
    again = provision(
        aws.session(),
        env="dev",
        endpoint_url=aws.endpoint_url,
        options=ProvisionOptions(batch=True, local_principal_arn="arn:aws:iam::123456789012:user/host"),
    )
    assert again == outputs
    batch = aws.client("batch")
    revisions = batch.describe_job_definitions(jobDefinitionName="chronos-dev-batch-job")["jobDefinitions"]
    assert [d["revision"] for d in revisions] == [1]
    versions = aws.client("ec2").describe_launch_template_versions(
        LaunchTemplateName="chronos-dev-batch-host"
    )
    assert len(versions["LaunchTemplateVersions"]) == 1


def test_moto_marks_a_job_succeeded_without_running_it(provisioned) -> None:
    """Why the local executor keeps its own record: moto's status says nothing about the job."""
    from common.timeutil import wait_until

    aws, outputs = provisioned
    batch = aws.client("batch")
    job = batch.submit_job(
        jobName="dev-20261201-210000-001",
        jobQueue=outputs["batch_job_queue"],
        jobDefinition=outputs["batch_job_definition"],
        parameters={"run_id": "20261201-210000-001", "code_key": "cached-datasets/scripts/nothing.tar.gz"},
    )
    wait_until(
        lambda: batch.describe_jobs(jobs=[job["jobId"]])["jobs"][0]["status"] == "SUCCEEDED",
        10,
        "moto to mark the job SUCCEEDED",
        every=0.2,
    )
    # the code bundle does not even exist: nothing ran
    with pytest.raises(aws.client("s3").exceptions.ClientError):
        aws.client("s3").head_object(Bucket=outputs["bucket"], Key="cached-datasets/scripts/nothing.tar.gz")
