"""Reading ``GET /metrics`` the way Prometheus does: ``prometheus_client.parser``."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Controller


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample by name and label set."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when the series does not exist (yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(key)[label] for sample, key in self.samples if sample == name}


async def scrape(ctl: Controller, token: str | None = None) -> Scrape:
    assert ctl.http is not None
    headers = {"Authorization": f"Bearer {token or ctl.admin_token}"}
    async with ctl.http.get(ctl.url + "/metrics", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/plain"
        text = await resp.text()
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return Scrape(samples)
