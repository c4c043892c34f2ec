"""Market Prophit's Generation-A ``/real-time/`` endpoints and their synthetic records.

Sentiment scores are not prices, so :class:`~tickpipe.emulators.market.MarketSim` does not
apply; each (path, ticker) stream is its own seeded bounded random walk. All numbers are
decimal *strings* as on the wire, e.g. one crowd-sentiment record::

    {"ts":"2014-08-12T20:38:00.000Z","ticker":"AAPL","average_sentiment":"0.3671460543121055"}

Only the crowd-sentiment, market-prophit-sentiment, tweet-volume, crowd-sentiment-z-score
and user-sentiment bodies are documented; the field names of the other seven endpoints
are our guess (unconfirmed) following the same pattern.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone

SCORE, VOLUME, USER = "score", "volume", "user"

# path -> (value fields, cadence seconds between consecutive records' ts)
ENDPOINTS: dict[str, tuple[tuple[str, ...], int]] = {
    "/real-time/crowd-sentiment": (("average_sentiment",), 60),
    "/real-time/crowd-sentiment-moving-average": (("moving_average",), 60),
    "/real-time/crowd-sentiment-z-score": (("z_score",), 60),
    "/real-time/crowd-sentiment-z-score-moving-average": (("z_score_moving_average",), 60),
    "/real-time/market-prophit-sentiment": (("signal_value",), 1),
    "/real-time/market-prophit-sentiment-moving-average": (("moving_average",), 1),
    "/real-time/market-prophit-sentiment-z-score": (("z_score",), 1),
    "/real-time/market-prophit-sentiment-z-score-moving-average": (("z_score_moving_average",), 1),
    "/real-time/tweet-volume": (("volume",), 60),
    "/real-time/tweet-buzz": (("buzz",), 60),
    "/real-time/user-sentiment": (("user_id", "sentiment", "user_score"), 1),
    "/real-time/user-sentiment-last-minute": (("user_id", "sentiment", "user_score"), 60),
}


def iso_ms(epoch_s: float) -> str:
    """``2014-08-12T20:38:00.000Z``: the docs' timestamp form."""
    return datetime.fromtimestamp(epoch_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class SentimentStream:
    """One (path, ticker) stream: ``ts`` advances by exactly the endpoint's cadence per record.

    It starts at the current wall-clock period; after that it is simulated time (ahead of
    the wall clock at high rates, behind it at low ones), so any gap is a real loss.
    """

    path: str
    ticker: str
    seed: int
    last_ts: int = 0  # epoch seconds of the last record sent (shared across connections)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.seed}:{self.path}:{self.ticker}")
        self.fields, self.cadence = ENDPOINTS[self.path]
        self.level = self.rng.uniform(-0.5, 0.5)

    def next_record(self, now_s: float, skew_s: float = 0.0) -> tuple[dict, int]:
        """The next record and its ``ts`` (epoch seconds, before skew)."""
        ts = self.last_ts + self.cadence if self.last_ts else int(now_s) // self.cadence * self.cadence
        self.last_ts = ts
        self.level = max(-1.0, min(1.0, self.level + self.rng.gauss(0, 0.05)))
        record = {"ts": iso_ms(ts + skew_s), "ticker": self.ticker}
        for name in self.fields:
            record[name] = self.value(name)
        return record, ts

    def value(self, name: str) -> str:
        rng = self.rng
        if name == "volume":
            return str(rng.randint(0, 400))
        if name == "user_id":
            return str(rng.randint(10**8, 4 * 10**9))
        if "z_score" in name:
            return f"{self.level * 3 + rng.uniform(-0.1, 0.1):.16f}"
        if name == "buzz":
            return f"{rng.uniform(0, 2):.16f}"
        return f"{self.level + rng.uniform(-0.01, 0.01):.16f}"
