"""AWS Batch for sweeps: compute environments, job queue, job definition, their roles and template.

Pure data in the AWS API's (boto3) shapes: the Pulumi component (:mod:`infra.batch`) and the
local provisioner (:mod:`infra.local_batch`) both build from here. Behind the stack config
``batch`` (off by default).

What AWS Batch demands that the training launch template does not give it:

- An ECS-capable AMI. Batch hosts run the ECS container agent; the Ubuntu DLAMI of the training
  template does not. So the Batch template has NO ``ImageId`` (an image in the template would win
  over ``ec2Configuration`` in Batch's AMI selection order, "AMI selection order", AWS Batch User
  Guide) and each compute environment asks for ``ECS_AL2023_NVIDIA``: AWS ends support for the AL2
  ECS AMIs and Batch's default moved to AL2023 in January 2026 (API Reference, Ec2Configuration).
- The ECS AMIs boot from ``/dev/xvda``: a block device mapping on the DLAMI's ``/dev/sda1`` would
  add a second volume instead of sizing the root one.
- User data in MIME multi-part format: Batch merges its own part (the ECS cluster join) with the
  template's (AWS Batch User Guide, "Use Amazon EC2 launch templates with AWS Batch").
- IMDSv2 hop limit 2: a container in bridge mode is one network hop further from IMDS than the
  host, and with limit 1 its token PUT never comes back (EC2 User Guide, "Configure the instance
  metadata options"); the trainer's spot watcher asks IMDS from inside the container.
- A public IP on a public subnet: ECS container instances need outbound access to the ECS
  endpoints, through a public IP or NAT ("Managed compute environments", AWS Batch User Guide).
  There is no NAT here (it bills by the hour), so the stack's subnets map a public IP on launch
  when ``batch`` is on. The security group goes on the compute environment (``securityGroupIds``,
  where moto also insists on it), never in a template network interface as well: EC2 refuses
  instance-level groups beside interface groups in one request.
- Batch ignores the template's instance type, instance profile and subnets (same page): they are
  compute-environment fields here.

Zero idle: ``minvCpus`` 0 and no ``desiredvCpus``, so Batch scales each environment to no instance
once the queue is empty (:mod:`infra.spec.zero_idle` refuses anything else); no scale-down delay
(``computeScalingPolicy.minScaleDownDelayMinutes`` keeps idle instances that bill at EC2 prices,
API Reference, ComputeScalingPolicy). Spot first: ``SPOT_PRICE_CAPACITY_OPTIMIZED`` needs no Spot
Fleet role (only ``BEST_FIT`` or an unset strategy does, API Reference, ComputeResource
``spotIamFleetRole``); an on-demand environment ``BEST_FIT_PROGRESSIVE`` sits behind it in the queue.
No service role is named: Batch then uses its service-linked role AWSServiceRoleForBatch, created
on first use (moto insists on a role ARN: the local provisioner passes that role's ARN).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import layout
from common.exitcodes import ExitCode
from common.gpus import SHAPES
from common.tags import BATCH_HOST_KEY
from infra.spec import SpecError
from infra.spec.names import resource_name, validate_env, validate_instance_type

ECS_IMAGE_TYPE = "ECS_AL2023_NVIDIA"
SPOT_STRATEGY = "SPOT_PRICE_CAPACITY_OPTIMIZED"
ON_DEMAND_STRATEGY = "BEST_FIT_PROGRESSIVE"
BATCH_SERVICE = "batch.amazonaws.com"
DEFAULT_MAX_VCPUS = 16
DEFAULT_ATTEMPTS = 3
DEFAULT_TIMEOUT_S = 24 * 3600
# An AWS Deep Learning Container with torch and CUDA; the job installs the wheelhouse on top.
DEFAULT_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.6.0-gpu-py312-cu126-ubuntu22.04-ec2"
)
ENTRY_SCRIPT = Path(__file__).resolve().parents[2] / "trainer" / "batch_entry.sh"
ENTRY_NAME = "chronos-batch"  # $0 of the entry script
JOB_PARAMETERS: tuple[str, ...] = ("env", "run_id", "code_key")
# The wheels a job installs over the image's Python: the launch's wheelhouse
# (control.launch_world.WHEELHOUSE_PREFIX is the same key).
WHEELHOUSE_PREFIX = layout.ENV_PREFIX_DIR + "wheelhouse/"
MEMORY_HEADROOM = 0.9  # the ECS agent and the OS keep part of the memory: a job asking all of it never places

# vCPUs, memory and GPUs of each allowed type: common.gpus.SHAPES (the one table of instance shapes).


@dataclass(frozen=True, kw_only=True)
class BatchScope:
    """What the Batch resources of one env are built from.

    Attributes:
        env, region, account_id: where they live.
        instance_type: the one type the environments launch (the stack's).
        max_vcpus: the ceiling of each environment (how many jobs run at once, times their vCPUs).
        image: the job's container image.
        attempts: Batch's attempts per job (the first and its retries).
        timeout_s: the longest one attempt may run before Batch ends it.
        local: local mode (jobs run on CPU by the local executor, ``--local``).
    """

    env: str
    region: str
    account_id: str
    instance_type: str
    max_vcpus: int = DEFAULT_MAX_VCPUS
    image: str = DEFAULT_IMAGE
    attempts: int = DEFAULT_ATTEMPTS
    timeout_s: int = DEFAULT_TIMEOUT_S
    local: bool = False

    def __post_init__(self) -> None:
        validate_env(self.env)
        validate_instance_type(self.instance_type)
        vcpus = SHAPES[self.instance_type].vcpus
        if self.max_vcpus < vcpus:
            raise SpecError(
                f"batch_max_vcpus {self.max_vcpus} is below one {self.instance_type} ({vcpus} vCPUs): "
                "no job could ever start"
            )
        if not 1 <= self.attempts <= 10:
            raise SpecError(f"batch attempts must be 1 to 10 (AWS Batch's range), got {self.attempts}")
        if self.timeout_s < 60:
            raise SpecError(
                f"batch job timeout must be at least 60 s (AWS Batch's minimum), got {self.timeout_s}"
            )


# ------------------------------------------------------------------ names


def names(env: str) -> dict[str, str]:
    """The names of every named Batch resource of ``env``."""
    return {
        "spot": resource_name(env, "batch-spot"),
        "on_demand": resource_name(env, "batch-on-demand"),
        "queue": resource_name(env, "batch-queue"),
        "job_definition": resource_name(env, "batch-job"),
        "launch_template": resource_name(env, "batch-host"),
        "host_role": resource_name(env, "batch-host"),
        "job_role": resource_name(env, "batch-job"),
    }


def service_linked_role_arn(account_id: str) -> str:
    """The Batch service-linked role (AWS Batch User Guide, "Using service-linked roles")."""
    return f"arn:aws:iam::{account_id}:role/aws-service-role/{BATCH_SERVICE}/AWSServiceRoleForBatch"


def job_queue_arn(region: str, account_id: str, env: str) -> str:
    return f"arn:aws:batch:{region}:{account_id}:job-queue/{names(env)['queue']}"


def job_definition_arn(region: str, account_id: str, env: str) -> str:
    """Every revision of the env's job definition (``name:*``)."""
    return f"arn:aws:batch:{region}:{account_id}:job-definition/{names(env)['job_definition']}:*"


# ------------------------------------------------------------------ compute, queue, job


@dataclass(frozen=True, kw_only=True)
class HostPlacement:
    """Where Batch places its hosts: strings, or Pulumi outputs of strings (placed, never inspected).

    Attributes:
        subnets: the stack's public subnets (one per AZ).
        security_group_id: the stack's security group (egress 443 only).
        instance_profile_arn: the ECS instance profile of the hosts.
        launch_template_id, launch_template_version: the Batch host template and its version.
        service_role_arn: ``None`` on AWS (the service-linked role); moto needs one named.
    """

    subnets: Sequence[Any]
    security_group_id: Any
    instance_profile_arn: Any
    launch_template_id: Any
    launch_template_version: Any
    service_role_arn: Any = None


def compute_environment(
    scope: BatchScope, hosts: HostPlacement, *, spot: bool, resource_tags: Mapping[str, str]
) -> dict[str, Any]:
    """boto3 ``CreateComputeEnvironment`` request of the spot (or on-demand) environment."""
    kind = "spot" if spot else "on_demand"
    resources: dict[str, Any] = {
        "type": "SPOT" if spot else "EC2",
        "allocationStrategy": SPOT_STRATEGY if spot else ON_DEMAND_STRATEGY,
        "minvCpus": 0,
        "maxvCpus": scope.max_vcpus,
        "instanceTypes": [scope.instance_type],
        "subnets": list(hosts.subnets),
        "securityGroupIds": [hosts.security_group_id],
        "instanceRole": hosts.instance_profile_arn,
        "launchTemplate": {
            "launchTemplateId": hosts.launch_template_id,
            "version": hosts.launch_template_version,
        },
        "ec2Configuration": [{"imageType": ECS_IMAGE_TYPE}],
        # on every host it launches: common.tags.is_batch_host knows them by this key
        "tags": {**resource_tags, "Name": names(scope.env)[kind], BATCH_HOST_KEY: names(scope.env)[kind]},
    }
    request: dict[str, Any] = {
        "computeEnvironmentName": names(scope.env)[kind],
        "type": "MANAGED",
        "state": "ENABLED",
        "computeResources": resources,
        "tags": dict(resource_tags),
    }
    if hosts.service_role_arn is not None:
        request["serviceRole"] = hosts.service_role_arn
    return request


def job_queue(
    env: str, spot_arn: Any, on_demand_arn: Any, resource_tags: Mapping[str, str]
) -> dict[str, Any]:
    """boto3 ``CreateJobQueue`` request: spot first, on-demand behind it."""
    return {
        "jobQueueName": names(env)["queue"],
        "state": "ENABLED",
        "priority": 1,
        "computeEnvironmentOrder": [
            {"order": 1, "computeEnvironment": spot_arn},
            {"order": 2, "computeEnvironment": on_demand_arn},
        ],
        "tags": dict(resource_tags),
    }


def retry_strategy(attempts: int) -> dict[str, Any]:
    """Retry what an interruption ends, exit on anything else (at most 5 rules, the last a catch-all).

    - the host went away under the job: status reason ``Host EC2 (instance i-...) terminated.``
      (AWS Batch User Guide, "Automated job retries": "Amazon EC2 instance failure or termination");
    - the trainer itself ended the attempt ``interrupted`` (exit 3: a spot notice seen first, it
      checkpointed and exited before the host died);
    - everything else (a failed, killed or completed run) exits: without the last rule Batch
      would retry whatever matched nothing (same page).
    """
    return {
        "attempts": attempts,
        "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "RETRY"},
            {"onExitCode": str(int(ExitCode.INTERRUPTED)), "action": "RETRY"},
            {"onReason": "*", "action": "EXIT"},
        ],
    }


def resource_requirements(instance_type: str) -> list[dict[str, str]]:
    """GPU, vCPU and memory of a job that takes a whole instance of ``instance_type``."""
    row = SHAPES[validate_instance_type(instance_type)]
    return [
        {"type": "GPU", "value": str(row.gpus)},
        {"type": "VCPU", "value": str(row.vcpus)},
        {"type": "MEMORY", "value": str(int(row.memory_gib * 1024 * MEMORY_HEADROOM))},
    ]


def job_definition(
    scope: BatchScope,
    *,
    bucket: Any,
    job_role_arn: Any,
    entry_script: str,
    resource_tags: Mapping[str, str],
    wheelhouse_prefix: str = "",
) -> dict[str, Any]:
    """boto3 ``RegisterJobDefinition`` request: the trainer entry point in Batch mode.

    The command is ``bash -c <trainer/batch_entry.sh> chronos-batch Ref::env Ref::run_id
    Ref::code_key``: Batch substitutes each ``Ref::`` from the job's parameters, the defaults here
    filled in (AWS Batch User Guide, "Job definition parameters": parameters). SubmitJob names the
    run (``run_id``) and its code bundle (``code_key``).
    """
    environment = {
        "CHRONOS_BUCKET": bucket,
        "CHRONOS_ENV": scope.env,
        "AWS_DEFAULT_REGION": scope.region,
        "CHRONOS_DEVICE": "cpu" if scope.local else "cuda",
        "CHRONOS_WHEELHOUSE_PREFIX": wheelhouse_prefix,
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        # trainer.batch_job: the attempts Batch makes (so the last one fails instead of keeping
        # the lock for nobody) and the one type the environments launch (identity without IMDS)
        "CHRONOS_BATCH_ATTEMPTS": str(scope.attempts),
        "CHRONOS_INSTANCE_TYPE": scope.instance_type,
    }
    if scope.local:
        environment["CHRONOS_LOCAL"] = "1"
    return {
        "jobDefinitionName": names(scope.env)["job_definition"],
        "type": "container",
        "parameters": {"env": scope.env, "run_id": "unset", "code_key": "unset"},
        "containerProperties": {
            "image": scope.image,
            "command": ["bash", "-c", entry_script, ENTRY_NAME, *(f"Ref::{p}" for p in JOB_PARAMETERS)],
            "jobRoleArn": job_role_arn,
            "resourceRequirements": resource_requirements(scope.instance_type),
            # an empty value is no variable (moto drops it; the entry script defaults it)
            "environment": [{"name": k, "value": v} for k, v in sorted(environment.items()) if v != ""],
        },
        "retryStrategy": retry_strategy(scope.attempts),
        "timeout": {"attemptDurationSeconds": scope.timeout_s},
        "platformCapabilities": ["EC2"],
        "propagateTags": True,
        "tags": dict(resource_tags),
    }


def entry_script() -> str:
    """The container command's script (``trainer/batch_entry.sh``, shipped beside the trainer)."""
    return ENTRY_SCRIPT.read_text(encoding="utf-8")


def substitute(command: Sequence[str], parameters: Mapping[str, str]) -> list[str]:
    """The command Batch runs: each item ``Ref::name`` replaced by the parameter (others kept)."""
    return [parameters.get(c[5:], c) if c.startswith("Ref::") else c for c in command]


def retry_decision(
    strategy: Mapping[str, Any], *, exit_code: int | None, status_reason: str, reason: str = ""
) -> str:
    """``RETRY`` or ``EXIT`` for one ended attempt, as Batch evaluates ``evaluateOnExit``.

    The first rule whose every given pattern matches decides (``*`` globs at the end, case
    sensitive); none matching retries (AWS Batch User Guide, "Automated job retries").
    """
    for rule in strategy.get("evaluateOnExit", []):
        tests = (
            ("onExitCode", "" if exit_code is None else str(exit_code)),
            ("onStatusReason", status_reason),
            ("onReason", reason),
        )
        if all(fnmatch.fnmatchcase(value, rule[key]) for key, value in tests if key in rule):
            return str(rule["action"]).upper()
    return "RETRY"
