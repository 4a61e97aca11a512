"""The cost ledger of a run, per attempt: pure arithmetic over the attempts and the phases.

Billing rules, as AWS states them:

- EC2 bills Linux instances, on-demand and spot, per second with a minimum of 60 seconds
  (Amazon EC2 On-Demand pricing, https://aws.amazon.com/ec2/pricing/on-demand/, and
  Spot pricing, https://aws.amazon.com/ec2/spot/pricing/).
  An attempt's billable seconds are ``max(60, ended_at - launched_at)``. ``launched_at`` is
  when RunInstances answered, a little before ``running``, so the ledger is an upper bound.
- A spot attempt pays the spot price recorded at launch (DescribeSpotPriceHistory for its
  type and AZ); the price moves during a long attempt, so this is an estimate, not the bill.
  AWS documents that a spot instance it interrupts in its first hour is not charged
  (Billing for interrupted Spot Instances, EC2 User Guide); the ledger still counts those
  seconds, so a budget stop never comes late.
- The root volume (gp3, deleted with the instance) bills per second of its life, prorated
  from the GB-month rate (:func:`common.pricing.ebs_usd`).

Each attempt's seconds are split into ``boot_setup`` (launch to the first phase, and
preflight), ``data_sync``, ``training``, ``evaluation``, ``upload`` (results_sync, finalize,
cleanup), ``lost`` (training after the newest durable checkpoint of an interrupted attempt:
the work the next attempt repeats) and ``other`` (the rest: shutdown, the 60 s minimum,
unrecorded time). Savings compare with the on-demand list price of the same seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from common.pricing import PRICE_TABLE_READ_ON, ebs_usd, on_demand_price
from common.timeutil import iso, parse_iso

MINIMUM_BILLED_S = 60.0  # EC2 per-second billing for Linux: 60 s minimum per instance
SPLIT = ("boot_setup", "data_sync", "training", "evaluation", "upload", "lost", "other")
PHASE_SPLIT = {
    "preflight": "boot_setup",
    "data_sync": "data_sync",
    "training": "training",
    "evaluation": "evaluation",
    "results_sync": "upload",
    "finalize": "upload",
    "cleanup": "upload",
}
INTERRUPTED_ENDS = frozenset({"interrupted", "vanished", "heartbeat_lost", "max_runtime_exceeded"})


def billable_seconds(running_s: float) -> float:
    """Seconds EC2 bills for an instance that ran ``running_s`` (per second, 60 s minimum)."""
    return max(MINIMUM_BILLED_S, max(running_s, 0.0))


@dataclass(frozen=True, kw_only=True)
class AttemptCost:
    """What one attempt (one instance) cost, and where its seconds went."""

    attempt: int
    instance_type: str
    market: str
    availability_zone: str | None
    price_per_hour: float | None
    price_source: str
    on_demand_per_hour: float | None
    launched_at: str
    ended_at: str | None  # None: still running (priced up to ``now``)
    running_s: float
    billable_s: float
    instance_usd: float | None
    ebs_usd: float
    on_demand_usd: float | None
    split_s: dict[str, float] = field(default_factory=dict)

    @property
    def total_usd(self) -> float | None:
        return None if self.instance_usd is None else self.instance_usd + self.ebs_usd

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "instance_type": self.instance_type,
            "market": self.market,
            "availability_zone": self.availability_zone,
            "price_per_hour": self.price_per_hour,
            "price_source": self.price_source,
            "on_demand_per_hour": self.on_demand_per_hour,
            "launched_at": self.launched_at,
            "ended_at": self.ended_at,
            "running_s": _r(self.running_s),
            "billable_s": _r(self.billable_s),
            "instance_usd": _usd(self.instance_usd),
            "ebs_usd": _usd(self.ebs_usd),
            "total_usd": _usd(self.total_usd),
            "on_demand_usd": _usd(self.on_demand_usd),
            "split_s": {k: _r(v) for k, v in self.split_s.items()},
        }


@dataclass(frozen=True, kw_only=True)
class Ledger:
    """A run's attempts priced, and their totals (training.json's ``ledger``)."""

    attempts: tuple[AttemptCost, ...]
    volume_gb: float
    at: str  # when it was computed (the end of any attempt still running)

    @property
    def priced(self) -> bool:
        """Every attempt has a price (an attempt still running is priced up to :attr:`at`)."""
        return all(a.instance_usd is not None for a in self.attempts)

    @property
    def total_usd(self) -> float:
        return sum(a.total_usd or 0.0 for a in self.attempts)

    @property
    def on_demand_usd(self) -> float:
        """The same seconds at the on-demand list price (with the same EBS)."""
        return sum((a.on_demand_usd or a.instance_usd or 0.0) + a.ebs_usd for a in self.attempts)

    @property
    def savings_usd(self) -> float:
        return max(0.0, self.on_demand_usd - self.total_usd)

    @property
    def billable_s(self) -> float:
        return sum(a.billable_s for a in self.attempts)

    def split_s(self) -> dict[str, float]:
        return {k: sum(a.split_s.get(k, 0.0) for a in self.attempts) for k in SPLIT}

    @property
    def training_share(self) -> float | None:
        """Training seconds (work kept) over billable seconds."""
        return self.split_s()["training"] / self.billable_s if self.billable_s else None

    def to_dict(self, *, max_cost: float | None = None) -> dict[str, Any]:
        """The schema's ``ledger`` object (schemas/training.schema.json)."""
        od = self.on_demand_usd
        doc: dict[str, Any] = {
            "currency": "USD",
            "price_table_read_on": PRICE_TABLE_READ_ON,
            "computed_at": self.at,
            "priced": self.priced,
            "volume_gb": self.volume_gb,
            "attempts": [a.to_dict() for a in self.attempts],
            "billable_s": _r(self.billable_s),
            "total_usd": _usd(self.total_usd),
            "on_demand_usd": _usd(od),
            "savings_usd": _usd(self.savings_usd),
            "savings_pct": round(100.0 * self.savings_usd / od, 1) if od else 0.0,
            "split_s": {k: _r(v) for k, v in self.split_s().items()},
            "training_share": None if self.training_share is None else round(self.training_share, 4),
        }
        if max_cost is not None:
            doc["max_cost"] = max_cost
        return doc


def _r(seconds: float) -> float:
    return round(seconds, 1)


def _usd(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _span(start: str | None, end: str | None) -> tuple[datetime, datetime] | None:
    if not start or not end:
        return None
    a, b = parse_iso(start), parse_iso(end)
    return (a, b) if b > a else None


def _overlap(a: tuple[datetime, datetime], b: tuple[datetime, datetime]) -> float:
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return max(0.0, (hi - lo).total_seconds())


def split_attempt(
    window: tuple[datetime, datetime],
    phases: Iterable[Mapping[str, Any]],
    *,
    billable_s: float,
    checkpoint_at: datetime | None = None,
    interrupted: bool = False,
) -> dict[str, float]:
    """Where one attempt's billable seconds went (keys :data:`SPLIT`, summing to ``billable_s``).

    Args:
        window: the attempt's launch and end (now while it runs).
        phases: training.json's phases; each counts only where it overlaps ``window``.
        billable_s: the attempt's billable seconds.
        checkpoint_at: the newest durable checkpoint of an interrupted attempt (``None``:
            none was, so all its recorded training is lost).
        interrupted: the attempt ended by an interruption: training after ``checkpoint_at``
            is ``lost``; with no phase recorded in the attempt (its training.json never
            written), the time from ``checkpoint_at`` to its end is.
    """
    split = dict.fromkeys(SPLIT, 0.0)
    first: datetime | None = None
    training_spans: list[tuple[datetime, datetime]] = []
    for phase in phases:
        span = _span(phase.get("started_at"), phase.get("ended_at") or iso(window[1]))
        key = PHASE_SPLIT.get(str(phase.get("name")))
        if span is None or key is None or _overlap(span, window) <= 0:
            continue
        first = span[0] if first is None else min(first, span[0])
        split[key] += _overlap(span, window)
        if key == "training":
            training_spans.append(span)
    if first is not None and first > window[0]:
        split["boot_setup"] += (min(first, window[1]) - window[0]).total_seconds()
    if interrupted:
        lost_from = max(checkpoint_at or window[0], window[0])
        if training_spans:
            lost = sum(_overlap(span, (lost_from, window[1])) for span in training_spans)
            split["training"] -= lost
        else:  # its phases were never written (the instance went away): the checkpoint to the end
            lost = (window[1] - lost_from).total_seconds() if checkpoint_at is not None else 0.0
        split["lost"] += max(0.0, lost)
    split["other"] = max(0.0, billable_s - sum(split.values()))
    return split


def price_attempt(
    attempt: Mapping[str, Any],
    *,
    phases: Iterable[Mapping[str, Any]] = (),
    interruption: Mapping[str, Any] | None = None,
    volume_gb: float,
    now: datetime,
) -> AttemptCost:
    """One attempt of the state's ``attempts`` (an open one priced up to ``now``)."""
    launched = parse_iso(str(attempt["launched_at"]))
    ended_at = attempt.get("ended_at")
    end = parse_iso(str(ended_at)) if ended_at else max(now, launched)
    running = (end - launched).total_seconds()
    billable = billable_seconds(running)
    od = on_demand_price(str(attempt["instance_type"])).usd_per_hour
    price = attempt.get("price_per_hour")
    source = str(attempt.get("price_source") or "unknown")
    if price is None and od is not None:
        price, source = od, "on-demand-table"  # no recorded price: the list price, an upper bound
    checkpoint = (interruption or {}).get("checkpoint_durable_at")
    return AttemptCost(
        attempt=int(attempt["attempt"]),
        instance_type=str(attempt["instance_type"]),
        market=str(attempt.get("market") or "on-demand"),
        availability_zone=attempt.get("availability_zone"),
        price_per_hour=None if price is None else float(price),
        price_source=source,
        on_demand_per_hour=od,
        launched_at=iso(launched),
        ended_at=iso(end) if ended_at else None,
        running_s=running,
        billable_s=billable,
        instance_usd=None if price is None else float(price) * billable / 3600.0,
        ebs_usd=ebs_usd(volume_gb, running),
        on_demand_usd=None if od is None else od * billable / 3600.0,
        split_s=split_attempt(
            (launched, end),
            phases,
            billable_s=billable,
            checkpoint_at=parse_iso(str(checkpoint)) if checkpoint else None,
            interrupted=attempt.get("end") in INTERRUPTED_ENDS or interruption is not None,
        ),
    )


def ledger(
    attempts: Iterable[Mapping[str, Any]],
    *,
    phases: Iterable[Mapping[str, Any]] = (),
    interruptions: Iterable[Mapping[str, Any]] = (),
    volume_gb: float,
    now: datetime,
) -> Ledger:
    """The run's ledger: every attempt priced and split (open attempts up to ``now``).

    Args:
        attempts: the state's ``attempts`` (C1 shape).
        phases: training.json's ``phases`` (of every attempt that recorded them).
        interruptions: training.json's ``interruptions`` (``attempt``, ``checkpoint_durable_at``).
        volume_gb: the root volume size (the spec's ``instance.root_volume_gb``).
        now: the end of any attempt still running.
    """
    phases = list(phases)
    by_attempt = {int(i["attempt"]): i for i in interruptions if i.get("attempt") is not None}
    priced = tuple(
        price_attempt(
            a, phases=phases, interruption=by_attempt.get(int(a["attempt"])), volume_gb=volume_gb, now=now
        )
        for a in sorted(attempts, key=lambda a: int(a["attempt"]))
    )
    return Ledger(attempts=priced, volume_gb=volume_gb, at=iso(now))


def attempts_of(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A state document's ``attempts``; for a state written before attempts were recorded,
    its one instance as attempt 1 (launched at the state's ``started_at``)."""
    if state.get("attempts"):
        return [dict(a) for a in state["attempts"]]
    if not all(state.get(k) for k in ("instance_id", "instance_type", "availability_zone", "started_at")):
        return []
    price = state.get("price_per_hour")
    return [
        {
            "attempt": int(state.get("attempt") or 1),
            "instance_id": state.get("instance_id"),
            "instance_type": state["instance_type"],
            "market": state.get("market") or "on-demand",
            "availability_zone": state.get("availability_zone"),
            "price_per_hour": price,
            "price_source": "recorded" if price is not None else "unknown",
            "launched_at": state["started_at"],
            "ended_at": None,
            "end": None,
            "notice_at": None,
        }
    ]


def projected_cost(
    *, spent_usd: float, usd_per_hour: float | None, remaining_s: float, volume_gb: float
) -> float:
    """What the run will have cost when it ends: spent so far plus the rest at the current rate.

    ``remaining_s`` is the time still to run (training ETA plus the finalize allowance);
    an unknown price counts as zero (the caller prices from the on-demand table first).
    """
    rate = (usd_per_hour or 0.0) * max(remaining_s, 0.0) / 3600.0
    return spent_usd + rate + ebs_usd(volume_gb, remaining_s)
