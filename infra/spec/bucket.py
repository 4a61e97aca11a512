"""The training bucket: key prefixes, settings, lifecycle rules and the TLS-only policy.

Read by the storage component, the local provisioner and ``invoke doctor``, which
compares a live bucket with these settings.
"""

from __future__ import annotations

from typing import Any

from common import layout
from infra.spec.names import validate_env

CACHED_DATASETS_PREFIX = layout.CACHED

LOG_EXPIRY_DAYS = 14
RUN_OUTPUT_IA_DAYS = 30  # S3's minimum age for a transition to STANDARD_IA
RUN_OUTPUT_EXPIRY_DAYS = 60
ABORT_MULTIPART_DAYS = 1
# Content-addressed code bundles are re-uploaded by the launch when missing (or close to
# expiry), so old ones can go.
CODE_BUNDLE_EXPIRY_DAYS = 30

PUBLIC_ACCESS_BLOCK: dict[str, bool] = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
OBJECT_OWNERSHIP = "BucketOwnerEnforced"
# SSE-S3: encryption at rest with no KMS key (a KMS key bills monthly while idle).
SSE_ALGORITHM = "AES256"


# ------------------------------------------------------------- key prefixes


def env_prefix(env: str) -> str:
    """Everything an environment writes lives under ``{env}/``."""
    return f"{validate_env(env)}/"


def logs_prefix(env: str) -> str:
    """Execution logs: ``{env}/logs/`` (from :mod:`common.layout`)."""
    return layout.logs_root(env)


def run_outputs_prefix(env: str) -> str:
    """Lifecycle filter covering every run-output folder ``{env}/YYYY/...``.

    Run outputs (``common.layout.RunPaths.prefix``) sit next to ``{env}/logs/``
    and ``{env}/system-state.json``, so
    the filter is ``{env}/2``: it matches the year folders 2000-2999 and nothing
    else the layout puts under ``{env}/`` (``logs/`` starts with ``l``,
    ``system-state.json`` with ``s``). A prefix filter needs no object tags, so
    every writer (trainer, s5cmd, aws s3 sync) is covered without cooperation.
    """
    return f"{env_prefix(env)}2"


# ----------------------------------------------------------------- settings


def bucket_arn(name: str) -> str:
    """ARN of a bucket by name."""
    return f"arn:aws:s3:::{name}"


def encryption_configuration() -> dict[str, Any]:
    """Default server-side encryption, boto3 ``ServerSideEncryptionConfiguration``.

    SSE-S3 has no bucket key (that is a KMS feature); it is stated because S3
    reports it.
    """
    return {
        "Rules": [
            {
                "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": SSE_ALGORITHM},
                "BucketKeyEnabled": False,
            }
        ]
    }


def lifecycle_rules(env: str) -> list[dict[str, Any]]:
    """Bucket lifecycle rules in the boto3 shape (``LifecycleConfiguration["Rules"]``).

    - ``{env}/logs/`` expire after 14 days;
    - run outputs (``{env}/YYYY/...``, see :func:`run_outputs_prefix`) move to
      STANDARD_IA at 30 days and expire at 60;
    - code bundles (``cached-datasets/scripts/``) expire after 30 days (a launch
      re-uploads a missing one);
    - incomplete multipart uploads anywhere are aborted after 1 day;
    - the rest of ``cached-datasets/`` and ``{env}/system-state.json`` match no expiring rule.
    """
    return [
        {
            "ID": "abort-incomplete-multipart",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
        },
        {
            "ID": "expire-logs",
            "Status": "Enabled",
            "Filter": {"Prefix": logs_prefix(env)},
            "Expiration": {"Days": LOG_EXPIRY_DAYS},
        },
        {
            "ID": "expire-code-bundles",
            "Status": "Enabled",
            "Filter": {"Prefix": layout.CODE_PREFIX},
            "Expiration": {"Days": CODE_BUNDLE_EXPIRY_DAYS},
        },
        {
            "ID": "run-outputs-ia-then-expire",
            "Status": "Enabled",
            "Filter": {"Prefix": run_outputs_prefix(env)},
            "Transitions": [{"Days": RUN_OUTPUT_IA_DAYS, "StorageClass": "STANDARD_IA"}],
            "Expiration": {"Days": RUN_OUTPUT_EXPIRY_DAYS},
        },
    ]


def lifecycle_configuration(env: str) -> dict[str, Any]:
    """boto3 ``LifecycleConfiguration`` argument."""
    return {"Rules": lifecycle_rules(env)}


def tls_only_bucket_policy(bucket_arn_: str) -> dict[str, Any]:
    """Bucket policy that denies every request not made over TLS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn_, f"{bucket_arn_}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }
