"""Command-line values the tasks parse themselves, so a bad one is one clear line (exit 2).

invoke casts a flag whose default is an int or a float with ``int()``/``float()`` before the
task runs, outside the error edge: ``--limit=1e9`` was a ``ValueError`` traceback. The tasks
take those flags as text and read them here, inside :func:`control.cli.edge.edge`.
"""

from __future__ import annotations

import math
from typing import Any

from common.errors import ConfigError


def whole(value: Any, flag: str, *, least: int = 0, most: int | None = None) -> int:
    """``value`` as a whole number in ``[least, most]``.

    Raises:
        ConfigError: naming the flag and what it takes.
    """
    text = str(value).strip()
    span = f"{least} or more" if most is None else f"{least} to {most}"
    try:
        number = int(text)
    except ValueError:
        raise ConfigError(f"{flag}={value!r} is not a whole number; give {span}") from None
    if number < least or (most is not None and number > most):
        raise ConfigError(f"{flag}={value!r} is out of range; give {span}")
    return number


def seconds(value: Any, flag: str, *, least: float = 0.0, above: bool = False) -> float:
    """``value`` as a finite number of seconds, at least ``least`` (more than it with ``above``).

    Raises:
        ConfigError: naming the flag and what it takes.
    """
    bound = f"more than {least:g}" if above else f"{least:g} or more"
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ConfigError(f"{flag}={value!r} is not a number of seconds; give {bound}") from None
    if not math.isfinite(number) or number < least or (above and number == least):
        raise ConfigError(f"{flag}={value!r} is out of range; give a number of seconds, {bound}")
    return number


def given(value: str | None, flag: str) -> str | None:
    """``value`` unless it was given empty (``--market=``), which would silently mean "not given".

    Raises:
        ConfigError: the flag was given an empty value.
    """
    if value is not None and not str(value).strip():
        raise ConfigError(f"{flag} was given an empty value; give one or leave the flag out")
    return value
