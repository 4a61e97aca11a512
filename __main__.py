"""Pulumi program: read the stack config, compose the components, export outputs.

Invalid configuration stops the preview with a one-line message.
"""

import pulumi

from infra.config import ConfigError, read_stack_config
from infra.spec import SpecError
from infra.stack import build_stack

try:
    config = read_stack_config()
    outputs = build_stack(config)
except (ConfigError, SpecError) as exc:
    raise pulumi.RunError(f"invalid stack configuration: {exc}") from None

for key, value in outputs.items():
    pulumi.export(key, value)
