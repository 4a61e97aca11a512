"""Run the Pulumi program under mocks and record what it declares.

No Pulumi CLI or provider exists here: ``pulumi.runtime.set_mocks`` answers every
resource registration and data-source call in-process. The program runs to
completion inside ``@pulumi.runtime.test`` and the assertions run afterwards on
the recorded inputs, so an assertion can never hide inside an ``apply``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime.mocks import MockMonitor

ACCOUNT = "123456789012"
REGION = "us-east-1"
AZS: tuple[str, ...] = ("us-east-1a", "us-east-1b", "us-east-1c")
SSM_AMI = "ami-0ddee0ddee0ddee0d"
PROJECT = "chronos-training"

_ID_PREFIX = {
    "aws:ec2/vpc:Vpc": "vpc",
    "aws:ec2/subnet:Subnet": "subnet",
    "aws:ec2/securityGroup:SecurityGroup": "sg",
    "aws:ec2/launchTemplate:LaunchTemplate": "lt",
    "aws:ec2/routeTable:RouteTable": "rtb",
    "aws:ec2/internetGateway:InternetGateway": "igw",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "vpce",
}


def _fake_id(type_token: str, name: str) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()[:17]
    return f"{_ID_PREFIX.get(type_token, 'id')}-{digest}"


def _fake_arn(type_token: str, inputs: dict[str, Any], rid: str) -> str:
    name = inputs.get("name", rid)
    ec2 = f"arn:aws:ec2:{REGION}:{ACCOUNT}"
    arns = {
        "aws:s3/bucket:Bucket": f"arn:aws:s3:::{inputs.get('bucket')}",
        "aws:iam/role:Role": f"arn:aws:iam::{ACCOUNT}:role/{name}",
        "aws:iam/instanceProfile:InstanceProfile": f"arn:aws:iam::{ACCOUNT}:instance-profile/{name}",
        "aws:iam/policy:Policy": f"arn:aws:iam::{ACCOUNT}:policy/{name}",
        "aws:ec2/launchTemplate:LaunchTemplate": f"{ec2}:launch-template/{rid}",
        "aws:ec2/vpc:Vpc": f"{ec2}:vpc/{rid}",
        "aws:ec2/securityGroup:SecurityGroup": f"{ec2}:security-group/{rid}",
        "aws:ec2/subnet:Subnet": f"{ec2}:subnet/{rid}",
        "aws:batch/computeEnvironment:ComputeEnvironment": (
            f"arn:aws:batch:{REGION}:{ACCOUNT}:compute-environment/{name}"
        ),
        "aws:batch/jobQueue:JobQueue": f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/{name}",
        "aws:batch/jobDefinition:JobDefinition": f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/{name}",
    }
    return arns.get(type_token, f"arn:aws:mock:::{rid}")


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Mocks that record every resource and call, and fake the computed outputs."""

    azs: Sequence[str] = AZS
    resources: list[pulumi.runtime.MockResourceArgs] = field(default_factory=list)
    calls: list[pulumi.runtime.MockCallArgs] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self.resources.append(args)
        rid = _fake_id(args.typ, args.name)
        self.ids[args.name] = rid
        state = dict(args.inputs)
        state.setdefault("arn", _fake_arn(args.typ, args.inputs, rid))
        if args.typ == "aws:ec2/launchTemplate:LaunchTemplate":
            state.setdefault("latestVersion", 1)  # computed by AWS: the first version
        if args.typ == "aws:batch/jobDefinition:JobDefinition":
            state.setdefault("arnPrefix", state["arn"])
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        self.calls.append(args)
        answers: dict[str, Callable[[], dict]] = {
            "aws:index/getCallerIdentity:getCallerIdentity": lambda: {
                "accountId": ACCOUNT,
                "arn": f"arn:aws:iam::{ACCOUNT}:user/ci",
                "userId": "AIDAEXAMPLE",
                "id": ACCOUNT,
            },
            "aws:index/getRegion:getRegion": lambda: {"region": REGION, "name": REGION},
            "aws:index/getAvailabilityZones:getAvailabilityZones": lambda: {
                "names": list(self.azs),
                "zoneIds": [f"use1-az{i}" for i in range(len(self.azs))],
                "id": REGION,
            },
            "aws:ssm/getParameter:getParameter": lambda: {
                "name": args.args["name"],
                "value": SSM_AMI,
                "insecureValue": SSM_AMI,
                "type": "String",
            },
        }
        if args.token not in answers:
            raise NotImplementedError(f"unmocked data source {args.token}")
        return answers[args.token]()


@dataclass
class DeclaredStack:
    """What one program run declared: resources, calls, URNs and exported outputs."""

    mocks: RecordingMocks
    urns: list[str]
    outputs: dict[str, Any]

    @property
    def resources(self) -> list[pulumi.runtime.MockResourceArgs]:
        return self.mocks.resources

    def id_of(self, name: str) -> str:
        """The id the mocks gave the resource of logical name ``name``."""
        return self.mocks.ids[name]

    def of_type(self, type_token: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [r for r in self.resources if r.typ == type_token]

    def named(self, type_token: str, name: str) -> dict[str, Any]:
        """The inputs of the ``type_token`` resource of logical name ``name``."""
        found = [r for r in self.of_type(type_token) if r.name == name]
        if len(found) != 1:
            raise LookupError(f"expected one {type_token} named {name!r}, found {len(found)}")
        return found[0].inputs

    def one(self, type_token: str) -> dict[str, Any]:
        found = self.of_type(type_token)
        if len(found) != 1:
            raise LookupError(f"expected one {type_token}, found {len(found)}")
        return found[0].inputs


def run_program(
    program: Callable[[], dict[str, Any]], mocks: RecordingMocks, *, preview: bool = False
) -> DeclaredStack:
    """Run ``program`` (which declares resources and returns outputs) under ``mocks``."""
    monitor = MockMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="dev", preview=preview, monitor=monitor)
    captured: dict[str, Any] = {}

    @pulumi.runtime.test
    def _run() -> pulumi.Output:
        outputs = program() or {}
        resolved = {k: pulumi.Output.from_input(v) for k, v in outputs.items()}
        return pulumi.Output.all(**resolved).apply(captured.update)

    _run()
    return DeclaredStack(mocks=mocks, urns=list(monitor.resources), outputs=captured)
