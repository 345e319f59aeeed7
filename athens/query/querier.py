"""The seam between PromQL and storage.

The engine runs unchanged over anything implementing Querier: the in-memory
store of the conformance runner, one worker's shard, or the router's
scatter/gather querier over all workers.

A querier over shards may offer more (Evaluator.fetch looks for them):
`evaluate_partials(PartialRequest)`, every shard's partial of a pushed-down
node (athens/query/planner.py), and `colocated = True` when series that
differ only in their metric name share a shard (placement WITHOUT_NAME),
which lets binary operators between vectors be pushed down too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from athens.model.matchers import Matcher
from athens.model.series import Series


class Querier(Protocol):
    async def select(
        self, matchers: Sequence[Matcher], mint: int, maxt: int
    ) -> Sequence[Series]:
        """Series matching all matchers, with their samples in [mint, maxt] ms.

        Series with no sample in the range are left out; the series are
        sorted by labels, each one's samples by time with no duplicate
        timestamps.
        """
        ...
