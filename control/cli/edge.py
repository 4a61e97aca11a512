"""The error edge of every invoke task, and the console the tasks print to.

A :class:`common.errors.UserError` (or a botocore configuration/credential error that
escaped its ``aws_errors`` block) becomes one red ``error:`` line on stderr and its
exit code; Ctrl-C becomes :attr:`ExitCode.CTRL_C`; anything else surfaces as itself.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any

from invoke import Exit
from rich.console import Console

from common.errors import UserError
from common.exitcodes import ExitCode


def console(stderr: bool = False) -> Console:
    """The rich console a task prints to: full width on a terminal, 240 columns in a pipe."""
    return Console(stderr=stderr, width=None if sys.stdout.isatty() else 240, highlight=False)


def _fail(message: str, code: int) -> Exit:
    console(stderr=True).print(f"error: {message}", style="red", soft_wrap=True, markup=False)
    return Exit(code=code)


def edge(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into one red line and their exit code; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise _fail(str(exc), exc.exit_code) from None
        except (BotoCoreError, ClientError) as exc:  # e.g. an SSO token expiring mid-command
            mapped = _aws_user_error(exc)
            if mapped is None:
                raise
            raise _fail(str(mapped), mapped.exit_code) from None
        except KeyboardInterrupt:
            console(stderr=True).print("interrupted", style="yellow")
            raise Exit(code=ExitCode.CTRL_C) from None

    return wrapper


def _aws_user_error(exc: Exception) -> UserError | None:
    from control.aws_errors import user_error

    return user_error(exc, "this command")


def takes_flags(flags_type: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a task body ``fn(c, flags)`` one command-line flag per field of ``flags_type``.

    invoke reads a task's flags (names, defaults, order of the short flags) from its
    signature; this builds that signature from the dataclass's fields, so a task with
    many options takes them as one frozen value instead of a long argument list.
    """
    fields = dataclasses.fields(flags_type)
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature(
        [inspect.Parameter("c", positional)]
        + [inspect.Parameter(f.name, positional, default=f.default) for f in fields]
    )

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def body(c: Any, **kwargs: Any) -> Any:
            return fn(c, flags_type(**kwargs))

        del body.__wrapped__  # invoke must see the flags' signature, not fn's
        body.__signature__ = signature  # type: ignore[attr-defined]
        return body

    return decorate
