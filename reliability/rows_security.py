"""RELIABILITY.md rows of the security group (see :mod:`reliability.matrix`)."""

from __future__ import annotations

from reliability.matrix import Row

ROWS: tuple[Row, ...] = ()
