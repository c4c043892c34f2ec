"""Synthetic account state for the authenticated Coinbase channels (``user``, ``futures_balance_summary``).

``user`` starts with a snapshot of the open orders (in batches of 50, the last batch
shorter) and then sends one ``update`` event whenever an order fills a little more::

    {"type":"update","orders":[{"order_id":"emu-0001","product_id":"BTC-USD","status":"OPEN",
      "cumulative_quantity":"0.0002","leaves_quantity":"0.0008",...}],
     "positions":{"perpetual_futures_positions":[],"expiring_futures_positions":[]}}
"""

from __future__ import annotations

import random
from decimal import Decimal

from tickpipe.emulators.market import fmt

PORTFOLIO_ID = "emulator-portfolio"
BATCH = 50
NO_TIME = "0001-01-01T00:00:00Z"


class UserAccount:
    """Open orders of one emulated account (per connection, seeded)."""

    def __init__(self, products: list[str], prices: dict[str, Decimal], rng: random.Random,
                 now_iso: str, orders_per_product: int = 2) -> None:
        self.rng = rng
        self.orders: list[dict] = []
        for product in products:
            for _ in range(orders_per_product):
                side = rng.choice(("BUY", "SELL"))
                offset = Decimal(rng.randint(1, 50)) / 1000
                limit = prices[product] * (1 - offset if side == "BUY" else 1 + offset)
                self.orders.append(_order(len(self.orders) + 1, product, side, limit.quantize(Decimal("0.01")),
                                          Decimal("0.001"), now_iso))

    def snapshot_events(self) -> list[dict]:
        """``snapshot`` then ``update`` events of at most 50 open orders each (the last one shorter than 50)."""
        open_orders = [o for o in self.orders if o["status"] == "OPEN"]
        batches = [open_orders[i:i + BATCH] for i in range(0, len(open_orders), BATCH)]
        if not batches or len(batches[-1]) == BATCH:
            batches.append([])
        return [{"type": "snapshot" if i == 0 else "update", "orders": [dict(o) for o in batch],
                 "positions": _positions()} for i, batch in enumerate(batches)]

    def fill_one(self) -> dict | None:
        """Fill part of a random open order; the ``update`` event describing it, or None if none is open."""
        open_orders = [o for o in self.orders if o["status"] == "OPEN"]
        if not open_orders:
            return None
        order = self.rng.choice(open_orders)
        filled = Decimal(order["cumulative_quantity"]) + Decimal("0.0002")
        total = filled + Decimal(order["leaves_quantity"]) - Decimal("0.0002")
        fills = int(order["number_of_fills"]) + 1
        value = filled * Decimal(order["limit_price"])
        order.update(cumulative_quantity=fmt(filled), leaves_quantity=fmt(total - filled),
                     number_of_fills=str(fills), avg_price=order["limit_price"], filled_value=fmt(value),
                     total_fees=fmt((value * Decimal("0.004")).quantize(Decimal("0.01"))),
                     completion_percentage=fmt((filled / total * 100).quantize(Decimal("0.01"))))
        if filled >= total:
            order["status"] = "FILLED"
        return {"type": "update", "orders": [dict(order)], "positions": _positions()}


def futures_balance_summary() -> dict:
    """The one ``fcm_balance_summary`` event of an account without futures positions."""
    measure = {"margin_window_type": "FCM_MARGIN_WINDOW_TYPE_INTRADAY", "margin_level": "MARGIN_LEVEL_TYPE_BASE",
               "initial_margin": "0", "maintenance_margin": "0", "liquidation_buffer_percentage": "1000",
               "total_hold": "0", "futures_buying_power": "1000"}
    return {"type": "snapshot", "fcm_balance_summary": {
        "futures_buying_power": "1000", "total_usd_balance": "1000", "cbi_usd_balance": "1000",
        "cfm_usd_balance": "0", "total_open_orders_hold_amount": "0", "unrealized_pnl": "0",
        "daily_realized_pnl": "0", "initial_margin": "0", "available_margin": "1000",
        "liquidation_threshold": "0", "liquidation_buffer_amount": "1000", "liquidation_buffer_percentage": "1000",
        "intraday_margin_window_measure": measure,
        "overnight_margin_window_measure": {**measure, "margin_window_type": "FCM_MARGIN_WINDOW_TYPE_OVERNIGHT"}}}


def _positions() -> dict:
    return {"perpetual_futures_positions": [], "expiring_futures_positions": []}


def _order(n: int, product: str, side: str, limit: Decimal, size: Decimal, now_iso: str) -> dict:
    return {"avg_price": "0", "cancel_reason": "", "client_order_id": f"emu-client-{n:04d}",
            "completion_percentage": "0", "contract_expiry_type": "UNKNOWN_CONTRACT_EXPIRY_TYPE",
            "cumulative_quantity": "0", "filled_value": "0", "leaves_quantity": fmt(size),
            "limit_price": fmt(limit), "number_of_fills": "0", "order_id": f"emu-{n:04d}",
            "order_side": side, "order_type": "Limit", "outstanding_hold_amount": fmt(limit * size),
            "post_only": "false", "product_id": product, "product_type": "SPOT", "reject_reason": "",
            "retail_portfolio_id": PORTFOLIO_ID, "risk_managed_by": "UNKNOWN_RISK_MANAGEMENT_TYPE",
            "status": "OPEN", "stop_price": "", "time_in_force": "GOOD_UNTIL_CANCELLED", "total_fees": "0",
            "total_value_after_fees": "0", "trigger_status": "INVALID_ORDER_TYPE", "creation_time": now_iso,
            "end_time": NO_TIME, "start_time": NO_TIME}
