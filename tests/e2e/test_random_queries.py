"""Random PromQL through a real `athens serve` against the engine alone.

bench.differential's data is remote-written to a two-worker server (the
older part sealed into segment files, the rest in the heads) and loaded
into a MemQuerier; its random expressions - selectors with offsets and @,
range functions, subqueries, aggregations with and without grouping, vector
matching with group_left/group_right, scalars, functions - must get the
same answers from both: the router's planner, pushdown to the workers,
their storage reads and the merge of their partials change nothing. Each
runs as an instant query at a random time and as a range query, with the
server's and the engine's delayed name removal on and off.
(`python -m bench.differential` asks Prometheus the same questions.)
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from athens.model.batch import WriteBatch
from athens.query.engine import Engine
from athens.query.memquerier import MemQuerier
from bench.differential import Expressions, difference, engine_answer, load_athens, make_data, requests_for
from e2e.harness import Athens

QUERIES = 300
SEED = 20261205


@pytest.fixture(scope="module", params=["on", "off"])
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A server and a store with the same data; with and without delayed name removal."""
    # The end on a whole hour: subquery steps (absolute times) fall on the
    # data the same way in every run.
    end = (int(time.time()) // 3600 - 1) * 3600_000
    data = make_data(np.random.default_rng(SEED), end)
    store = MemQuerier()
    store.append(WriteBatch.from_series(data))
    server = Athens(tmp_path_factory.mktemp("random") / "data", workers=2,
                    extra=["--query-delayed-name-removal", request.param]).start()
    try:
        load_athens(server.url, data, end)
        yield server, store, end, Engine(delayed_name_removal=request.param == "on")
    finally:
        server.stop()


def test_random_queries_answer_as_the_engine_alone(loaded) -> None:  # type: ignore[no-untyped-def]
    server, store, end, engine = loaded
    gen = Expressions(SEED)
    differ = []
    answered = 0  # answers with at least one point
    for _ in range(QUERIES):
        query = gen.query()
        for path, params in requests_for(query, gen.r, end):
            _, got = server.api(path, params)
            why = difference(query, got, engine_answer(engine, store, params))
            if why:
                differ.append(f"{path} {query}: {why}")
            answered += got["status"] == "success" and bool(got["data"]["result"])
    assert not differ, "\n".join(differ)
    assert answered > QUERIES, answered  # most of the 2 x QUERIES answers hold data
