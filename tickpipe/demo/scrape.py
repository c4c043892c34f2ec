"""Prometheus text from a child's ops port, as plain numbers the view can use."""

from __future__ import annotations

from dataclasses import dataclass, field

Labels = frozenset  # of (name, value) pairs


@dataclass
class Samples:
    """Every sample of one scrape: ``values[(sample name, labels)] = value``."""

    values: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.values.items() if n == name and wanted <= ls)

    def by_label(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """``{value of label: summed sample}`` over the samples called ``name``."""
        wanted, out = set(labels.items()), {}
        for (n, ls), v in self.values.items():
            if n == name and wanted <= ls:
                key = dict(ls).get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out


def parse_metrics(text: str) -> Samples:
    """Parse Prometheus exposition text; a malformed scrape gives what parsed before the fault."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = Samples()
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.values[(s.name, frozenset(s.labels.items()))] = float(s.value)
    except (ValueError, TypeError, IndexError):
        pass
    return samples


async def scrape(session, port: int, timeout: float = 0.8) -> Samples | None:
    """``GET http://127.0.0.1:<port>/metrics`` with an aiohttp ``session``; None if it did not answer."""
    import aiohttp

    try:
        async with session.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                return None
            return parse_metrics(await resp.text())
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None
