"""Market Prophit's streams (Generation A ``/real-time/`` paths, Generation B names) and their records.

Sentiment scores are not prices, so :class:`~tickpipe.emulators.market.MarketSim` does not
apply; each (path, ticker) stream is its own seeded bounded random walk. All numbers are
decimal *strings* as on the wire, e.g. one crowd-sentiment record::

    {"ts":"2014-08-12T20:38:00.000Z","ticker":"AAPL","average_sentiment":"0.3671460543121055"}

Only the crowd-sentiment, market-prophit-sentiment, tweet-volume, crowd-sentiment-z-score
and user-sentiment bodies are documented; the field names of the other seven endpoints
are our guess (unconfirmed), shared with the normalizer (``GEN_A_FIELD``, ``CADENCE_S``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone

from tickpipe.processors.normalizers.marketprophit import CADENCE_S, GEN_A_FIELD

USER_FIELDS = ("user_id", "sentiment", "user_score")

# path -> (value fields, seconds between consecutive records' ts); field names and cadences
# are the normalizer's, so what the emulator sends is what the pipeline expects
ENDPOINTS: dict[str, tuple[tuple[str, ...], int]] = {
    f"/real-time/{metric}": ((field,), CADENCE_S[metric]) for metric, field in GEN_A_FIELD.items() if metric in CADENCE_S}
ENDPOINTS["/real-time/user-sentiment"] = (USER_FIELDS, 1)
ENDPOINTS["/real-time/user-sentiment-last-minute"] = (USER_FIELDS, 60)

# Generation B (Sep 2014): five named streams for every ticker, fields as documented
GEN_B_ENDPOINTS: dict[str, tuple[tuple[str, ...], int]] = {
    "crowd-sentiment": (("crowd_sentiment",), 60),
    "user-sentiment": (USER_FIELDS, 1),
    "market-prophit-sentiment": (("mp_sentiment",), 1),
    "crowd-sentiment-chart-data": (("crowd_sentiment", "crowd_sentiment_moving_average", "crowd_sentiment_z_score",
                                    "crowd_sentiment_z_score_moving_average", "volume", "buzz"), 60),
    "market-prophit-sentiment-chart-data": (("mp_sentiment", "mp_sentiment_moving_average", "mp_sentiment_z_score",
                                             "mp_sentiment_z_score_moving_avg"), 1),
}


def sequenced(path: str) -> bool:
    """Whether a consumer can check a stream's periods (user-sentiment: many users per period)."""
    return path.rsplit("/", 1)[-1] in CADENCE_S


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
        self.fields, self.cadence = ENDPOINTS.get(self.path) or GEN_B_ENDPOINTS[self.path]
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
