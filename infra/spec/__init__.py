"""The one source of truth for what the infrastructure is, one module per concern.

Pure data and functions, no Pulumi and no boto3 import. The Pulumi components
(``infra/*.py``) and the local provisioner (``infra/local*.py``) both build from
here, so AWS and local mode cannot drift. Shapes are the boto3 (AWS API) ones;
:mod:`infra.spec.pulumi_inputs` turns them into the Pulumi AWS provider's inputs.

- :mod:`~infra.spec.names`: env and instance-type rules, resource and bucket names;
- :mod:`~infra.spec.tags`: which resource types a launch tags, IAM tag conditions
  (the tags themselves are :mod:`common.tags`);
- :mod:`~infra.spec.bucket`: key prefixes, bucket settings and lifecycle rules;
- :mod:`~infra.spec.network`: CIDRs, zones, security-group rules, the launch's interface;
- :mod:`~infra.spec.launch_template`: the training instance's launch-template data;
- :mod:`~infra.spec.iam`: policy-document helpers, the instance role's documents;
- :mod:`~infra.spec.operator_access`: the operator's policy;
- :mod:`~infra.spec.debug`: the opt-in debug role and Session Manager statements;
- :mod:`~infra.spec.zero_idle`: the resource types that cost nothing while idle;
- :mod:`~infra.spec.batch`: AWS Batch for sweeps (compute environments, queue, job definition,
  Batch's retry rules), :mod:`~infra.spec.batch_host` its roles and host launch template;
- :mod:`~infra.spec.pulumi_inputs`: boto3 shapes to Pulumi provider inputs.

Each name lives in the module of its concern and is imported from there; this
package itself defines only :class:`SpecError`.
"""

from __future__ import annotations


class SpecError(ValueError):
    """A value that the infrastructure spec does not accept."""
