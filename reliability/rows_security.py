"""RELIABILITY.md rows of the security group (see :mod:`reliability.matrix`)."""

from __future__ import annotations

from reliability.matrix import Row

_S = "Security"

ROWS: tuple[Row, ...] = (
    Row(
        id="no-secrets-in-run-outputs",
        section=_S,
        fault="scan every file a full local run writes (every S3 object of the run and env, the user data, "
        "the instance's files and console log, the runs/ mirror after fetch) for the secret values in play "
        "(every local identity's secret key, the role session credentials the fake IMDS served) and for "
        "credential patterns",
        expected="no secret value and no credential pattern anywhere; the scanner finds a planted secret "
        "(plain, JSON, gzip, tar.gz, zip, base64, URL-encoded)",
    ),
    Row(
        id="imdsv2-required-at-launch",
        section=_S,
        fault="the launch template's metadata options, and every RunInstances request the product makes "
        "(launch, doctor's dry run, relaunch)",
        expected="HttpTokens required, endpoint enabled, PUT hop limit 1 in the spec, the provisioned "
        "template and Pulumi's inputs; no RunInstances overrides them",
    ),
    Row(
        id="imds-refuses-tokenless-requests",
        section=_S,
        fault="IMDSv1 (no token), an unknown token, an expired token, a token PUT through a proxy "
        "(X-Forwarded-For) against the local instance's fake IMDS",
        expected="401 for every metadata and credentials path without a live token; the token PUT "
        "through a proxy is refused (403); a bad TTL is 400",
    ),
    Row(
        id="instance-role-stays-in-its-env",
        section=_S,
        fault="the dev instance role's own credentials try another env's prefix (its bucket and the "
        "prod bucket), prod's state file and lock, a listing of another prefix, and writes to "
        "cached-datasets/",
        expected="denied by moto's IAM enforcement and by the project's IAM evaluator on the role's real "
        "policies (conditions and ARNs), while its own env and the reads of cached-datasets/ are allowed",
    ),
    Row(
        id="bucket-denies-plain-http",
        section=_S,
        fault="requests over plain HTTP to the bucket with the TLS-only policy (the policy document under "
        "the evaluator; SeaweedFS enforcing the same policy over HTTP and HTTPS)",
        expected="every S3 action over HTTP is denied, over TLS it is not; SeaweedFS answers AccessDenied "
        "over HTTP and serves the same call over HTTPS",
    ),
    Row(
        id="instance-listens-on-no-port",
        section=_S,
        fault="the local instance's process tree (user data, trainer, training child) sampled with psutil "
        "through a whole run, training included",
        expected="no TCP socket in LISTEN and no unconnected UDP socket in any of its processes",
    ),
)
