"""``invoke cost``: what the runs of an env cost, per run and in total, with the savings.

Each ended run is priced by the ledger its training.json carries (``common.ledger``: per
attempt, per-second billing with the 60 s minimum, EBS prorated); the active run by the
state file's attempts priced up to now; a run from before the ledger by its launch price
times its duration (``estimate``). The prices themselves live in :mod:`common.pricing`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common import layout
from common.errors import ConfigError
from common.pricing import PRICE_SOURCE
from common.state_store import StateStore
from common.timeutil import Clock, utc_now
from control.backend import Backend, check_env
from control.runs import RunSummary, read_run, run_ids

_UNITS = {"m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_since(value: str) -> timedelta:
    """``30d``, ``12h``, ``90m`` or ``2w`` as a time span.

    Raises:
        ConfigError: anything else (one line, with the accepted forms).
    """
    m = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", str(value))
    if not m or int(m.group(1)) == 0:
        raise ConfigError(f"--since {value!r}: give a span like 30d, 12h, 90m or 2w")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


@dataclass(frozen=True, kw_only=True)
class RunCost:
    """One run's cost as ``invoke cost`` shows it.

    ``source`` is ``ledger`` (training.json), ``live`` (the active run, priced so far),
    ``estimate`` (no ledger: launch price x duration) or ``none`` (nothing to price).
    """

    run_id: str
    status: str
    active: bool
    started_at: datetime | None
    source: str
    attempts: int
    billable_s: float | None
    total_usd: float | None
    on_demand_usd: float | None
    savings_usd: float | None
    training_share: float | None
    lost_s: float | None
    markets: tuple[str, ...]
    sweep_id: str | None = None

    @classmethod
    def of(cls, run: RunSummary) -> RunCost:
        money = run.ledger
        if money is not None:
            markets = tuple(dict.fromkeys(a["market"] for a in money["attempts"]))
            return cls(
                run_id=run.run_id,
                status=run.status,
                active=run.active,
                started_at=run.started_at,
                source="live" if run.active else "ledger",
                attempts=len(money["attempts"]),
                billable_s=money["billable_s"],
                total_usd=money["total_usd"],
                on_demand_usd=money["on_demand_usd"],
                savings_usd=money["savings_usd"],
                training_share=money["training_share"],
                lost_s=money["split_s"]["lost"],
                markets=markets,
                sweep_id=run.sweep_id,
            )
        estimate = run.cost_usd
        return cls(
            run_id=run.run_id,
            status=run.status,
            active=run.active,
            started_at=run.started_at,
            source="estimate" if estimate is not None else "none",
            attempts=run.attempts,
            billable_s=run.duration_s,
            total_usd=estimate,
            on_demand_usd=None,
            savings_usd=None,
            training_share=None,
            lost_s=None,
            markets=(run.market,) if run.market else (),
            sweep_id=run.sweep_id,
        )

    def to_dict(self) -> dict[str, Any]:
        doc = dict(self.__dict__)
        doc["started_at"] = self.started_at.isoformat() if self.started_at else None
        doc["markets"] = list(self.markets)
        return doc


@dataclass(frozen=True, kw_only=True)
class CostReport:
    """The runs of ``env`` started since ``since``, newest first, and their totals."""

    env: str
    since: datetime
    runs: tuple[RunCost, ...]
    sweep_id: str | None = None  # only this sweep's members (``invoke cost --sweep``)

    def by_sweep(self) -> dict[str, float]:
        """Each sweep's total over its members listed here (sweep id -> USD)."""
        out: dict[str, float] = {}
        for r in self.runs:
            if r.sweep_id:
                out[r.sweep_id] = round(out.get(r.sweep_id, 0.0) + (r.total_usd or 0.0), 4)
        return out

    @property
    def total_usd(self) -> float:
        return sum(r.total_usd or 0.0 for r in self.runs)

    @property
    def savings_usd(self) -> float:
        return sum(r.savings_usd or 0.0 for r in self.runs)

    @property
    def on_demand_usd(self) -> float:
        """What the priced runs would have cost on demand (estimates count at their own cost)."""
        return sum(r.on_demand_usd if r.on_demand_usd is not None else r.total_usd or 0.0 for r in self.runs)

    @property
    def unpriced(self) -> int:
        return sum(1 for r in self.runs if r.total_usd is None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "since": self.since.isoformat(),
            "price_table": PRICE_SOURCE,
            "runs": [r.to_dict() for r in self.runs],
            "total_usd": round(self.total_usd, 4),
            "on_demand_usd": round(self.on_demand_usd, 4),
            "savings_usd": round(self.savings_usd, 4),
            "unpriced": self.unpriced,
            "sweep_id": self.sweep_id,
            "sweeps": self.by_sweep(),
        }


def cost_report(
    backend: Backend, *, env: str, since: str = "30d", sweep: str | None = None, clock: Clock = utc_now
) -> CostReport:
    """``invoke cost``: every run of ``env`` started in the last ``since`` (``sweep``: only that
    sweep's members, whatever ``since`` says), priced.

    Raises:
        ConfigError: a bad env name, ``since`` or sweep id.
    """
    check_env(env)
    span = parse_since(since)
    if sweep is not None:
        try:
            layout.parse_sweep_id(sweep)
        except layout.LayoutError as exc:
            raise ConfigError(f"--sweep: {exc}") from None
    backend.check_credentials()
    outputs = backend.stack_outputs(env)
    s3 = backend.clients().s3
    now = clock()
    start = now - span
    with backend.errors("s3:ListBucket", f"s3://{outputs.bucket}/{env}/"):
        snap = StateStore(s3, outputs.bucket, env).read()
        ids = set(run_ids(s3, outputs.bucket, env))
        if snap is not None:
            ids.add(snap.run_id)
        recent = [
            r
            for r in sorted(ids, reverse=True)
            if (layout.sweep_of(r) == sweep if sweep else layout.parse_run_id(r) >= start)
        ]
        state = snap.doc if snap else None
        runs = [read_run(s3, outputs.bucket, env, r, state=state, clock=clock) for r in recent]
    return CostReport(env=env, since=start, runs=tuple(RunCost.of(r) for r in runs), sweep_id=sweep)
