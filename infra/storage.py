"""Storage: the training bucket, private, encrypted, TLS-only, with lifecycle rules."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.spec import bucket as spec_bucket
from infra.spec import pulumi_inputs as spec_pulumi
from infra.spec import zero_idle as spec_zero_idle


@dataclass(frozen=True, kw_only=True)
class StorageArgs:
    """Inputs of :class:`Storage`."""

    env: str
    bucket_name: str
    tags: Mapping[str, str]


class Storage(pulumi.ComponentResource):
    """The bucket ``chronos-training-{env}-{account}-{region}`` and its settings.

    Versioning stays off (no noncurrent copies to pay for); SSE-S3 encryption;
    every public-access block on; ACLs disabled (BucketOwnerEnforced); the
    lifecycle rules and the TLS-only policy come from :mod:`infra.spec`.
    """

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{spec_zero_idle.COMPONENT_TYPE_PREFIX}Storage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = aws.s3.Bucket(
            f"{name}-bucket", bucket=args.bucket_name, tags=dict(args.tags), opts=child
        )
        self.public_access_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access-block",
            bucket=self.bucket.id,
            **spec_pulumi.to_pulumi_inputs(spec_bucket.PUBLIC_ACCESS_BLOCK),
            opts=child,
        )
        self.ownership_controls = aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=self.bucket.id,
            rule={"object_ownership": spec_bucket.OBJECT_OWNERSHIP},
            opts=child,
        )
        self.encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=self.bucket.id,
            **spec_pulumi.to_pulumi_inputs(spec_bucket.encryption_configuration()),
            opts=child,
        )
        self.lifecycle = aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=self.bucket.id,
            rules=spec_pulumi.to_pulumi_inputs(spec_bucket.lifecycle_rules(args.env)),
            opts=child,
        )
        self.policy = aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=self.bucket.id,
            policy=self.bucket.arn.apply(lambda arn: json.dumps(spec_bucket.tls_only_bucket_policy(arn))),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.public_access_block]),
        )
        self.bucket_name: pulumi.Output[str] = self.bucket.bucket
        self.bucket_arn: pulumi.Output[str] = self.bucket.arn
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn})
