"""Read-only views of a Shard for the HTTP API that need no samples.

Kept apart from shard.py (which owns storage) so the API can grow without
touching the storage engine: listing series for /api/v1/series, and the
postings statistics behind /api/v1/status/tsdb.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from athens.model.labels import Labels
from athens.model.matchers import Matcher
from athens.shards.shard import Shard


def series_labels(
    shard: Shard, matchers: Sequence[Matcher], mint: int, maxt: int, limit: int = 0
) -> tuple[list[Labels], bool]:
    """Label sets of matching series with data in [mint, maxt], sorted.

    Like label_names, "data in range" is judged from each series' first and
    last timestamp, which is what Prometheus does for /api/v1/series. With
    limit > 0 at most `limit` series are returned and the flag says whether
    any were left out.
    """
    shard._check_open()
    ids = shard._ids_in_range(matchers, mint, maxt)
    # The shard's label rank orders them with a numeric sort: comparing the
    # label sets themselves costs ~1.5 us a pair of series.
    ids = ids[np.argsort(shard.label_rank()[ids], kind="stable")]
    truncated = 0 < limit < len(ids)
    if truncated:
        ids = ids[:limit]
    labels = shard.index.labels
    return [labels[i] for i in ids.tolist()], truncated


def postings_stats(shard: Shard) -> dict[str, Any]:
    """Per label name, each value's series count; plus the time range held.

    The router merges these over workers (series are disjoint between
    workers, so counts add up and distinct values are unions).
    """
    shard._check_open()
    index = shard.index
    pairs: dict[str, dict[str, int]] = {}
    for name, values in index._postings.items():
        pairs[name] = {v: len(ids) for v, ids in values.items()}
    n = min(len(index), len(shard._smin))
    smin = shard._smin[:n]
    smax = shard._smax[:n]
    valid = smin <= smax
    return {
        "series": index.live,
        "pairs": pairs,
        "min_time": int(smin[valid].min()) if valid.any() else None,
        "max_time": int(smax[valid].max()) if valid.any() else None,
        "chunks": sum(h.num_chunks for h in shard.heads()),
    }
