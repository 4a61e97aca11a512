"""Infrastructure as code for zero-idle Chronos training.

``spec`` (pure data: names, tags, bucket rules, policy documents), ``config`` and
``outputs`` (the stack's config and outputs), the Pulumi components (``network``,
``storage``, ``iam``, ``compute``, ``budget``) composed by ``stack``, and the local
provisioner (``local``) that builds the same resources in moto.
"""
