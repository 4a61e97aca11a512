"""The policy tests' evaluator lives in the product now: :mod:`localaws.iam_eval`."""

from __future__ import annotations

from localaws.iam_eval import Decision, Request, Unresolvable, UnsupportedPolicy, allowed, decide, evaluate

__all__ = ["Decision", "Request", "Unresolvable", "UnsupportedPolicy", "allowed", "decide", "evaluate"]
