"""What runs cost: the prices (re-exported from :mod:`common.pricing`, their one home).

``invoke cost`` reads each run's ledger from here (see :func:`cost_report`).
"""

from __future__ import annotations

from common.pricing import (
    ON_DEMAND_USD_PER_HOUR,
    PRICE_SOURCE,
    SPOT_PRODUCT,
    Price,
    launch_price,
    newest_per_az,
    on_demand_price,
    spot_price,
)

__all__ = [
    "ON_DEMAND_USD_PER_HOUR",
    "PRICE_SOURCE",
    "SPOT_PRODUCT",
    "Price",
    "launch_price",
    "newest_per_az",
    "on_demand_price",
    "spot_price",
]
