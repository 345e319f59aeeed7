"""GET /federate: the newest sample of every series a match[] selects, in
Prometheus' text exposition format.

So a Prometheus can scrape aggregated series out of Athens as it scrapes
another Prometheus (`metrics_path: /federate`, `honor_labels: true`).
Prometheus' web/federate.go is the model: the newest sample of the last
lookback delta, a series whose newest sample is a staleness marker left
out (the format has no such marker), families by metric name, all
`untyped`, and `instance=""` on series without an instance label (as
Prometheus adds its external labels, which always include instance).
Athens answers the text format (0.0.4) whatever the Accept header asks;
a scraper reads the Content-Type.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from athens.model.labels import Labels
from athens.model.series import SeriesSet, is_stale
from athens.router.metrics import escape_label_value, format_value

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def newest_samples(series: SeriesSet) -> tuple[list[Labels], np.ndarray, np.ndarray]:
    """Each series' newest sample (labels, ts, values), in the set's order;
    series without samples or ending in a staleness marker left out."""
    ends = series.offsets[1:]
    has = ends > series.offsets[:-1]
    last = ends[has] - 1
    ts, values = series.ts[last], series.values[last]
    keep = ~is_stale(values)
    rows = [lb for lb, h in zip(series.labels, has.tolist()) if h]
    return [lb for lb, k in zip(rows, keep.tolist()) if k], ts[keep], values[keep]


def render(rows: Sequence[Labels], ts: np.ndarray, values: np.ndarray) -> bytes:
    """The samples as text exposition families, one `# TYPE <name> untyped`
    a metric name, families in name order and series in `rows`' order
    within them; nameless series are left out, as Prometheus does."""
    names = [lb.get("__name__") for lb in rows]
    order = sorted((i for i, n in enumerate(names) if n), key=names.__getitem__)
    lines = []
    family = None
    for i, t, v in zip(order, ts[order].tolist(), values[order].tolist()):
        lb = rows[i]
        if names[i] != family:
            family = names[i]
            lines.append(f"# TYPE {family} untyped\n")
        pairs = [f'{k}="{escape_label_value(val)}"' for k, val in lb if k != "__name__" and val]
        if not lb.get("instance"):
            pairs.append('instance=""')
        lines.append(f"{family}{{{','.join(pairs)}}} {format_value(v)} {t}\n")
    return "".join(lines).encode()
