"""A worker's streamed EVAL on a real shard equals the whole-select evaluation.

On a worker evaluate_partial reads the selector's series slice by slice
(ShardSlices: head, sealed segments, out-of-order samples) and evaluates
each slice on its own; the partial must be exactly what evaluating all of
Shard.select in one piece gives, whatever the slice sizes.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from athens.errors import TooManySamplesError
from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.query import ast
from athens.query.parser import parse
from athens.query.planner import Partial, PartialRequest, merge_partials, node_index, pushable
from athens.shards import evaluate, ipc
from athens.shards.shard import Shard, ShardConfig

T0 = 1_700_000_000_000
STEP = 15_000
N_SERIES = 40
N_SAMPLES = 480  # two hours

QUERIES = [
    "sum by (job) (rate(m[5m]))",
    "avg(m)",
    "max by (job) (max_over_time(m[10m]))",
    "count(m > 0)",
    "stddev by (job) (m)",
    "topk(3, m)",
    "bottomk(2, delta(m[3m]))",
    'count_values("v", round(m))',
    "group by (job) (m)",
    "min without (i) (abs(m))",
    "sum by (i) (rate(m[5m]))",  # a series a group: slices' groups disjoint
    "stddev by (i) (m)",
]


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Shard:
    """Sealed segments, a head, and out-of-order samples in between."""
    s = Shard(Path(tmp_path_factory.mktemp("eval")) / "shard", ShardConfig(wal_fsync="off"))
    s.open()
    rng = np.random.default_rng(7)
    labels = [Labels.from_dict({"__name__": "m", "job": f"j{i % 3}", "i": str(i)}) for i in range(N_SERIES)]
    for k0 in range(0, N_SAMPLES, 60):
        ts = T0 + np.arange(k0, k0 + 60, dtype=np.int64) * STEP
        keep = rng.random(60) > 0.1  # gaps, and the dropped ones come back out of order
        batch = WriteBatch.from_series(
            [(lb, ts[keep], np.round(rng.uniform(-5, 20, int(keep.sum())), 1)) for lb in labels]
        )
        s.append(batch)
        late = WriteBatch.from_series([(lb, ts[~keep], rng.uniform(-5, 20, int((~keep).sum()))) for lb in labels])
        s.append(late)
        if k0 == 240:
            s.flush()
    return s


def _request(text: str, start: int, end: int, step: int) -> PartialRequest:
    root = parse(text)
    agg = next(n for n in ast.walk(root) if isinstance(n, ast.AggregateExpr) and pushable(n))
    ts = np.arange(start, end + 1, step, dtype=np.int64) if step else np.array([start], np.int64)
    return PartialRequest(text, node_index(root, agg), start, end, step, 300_000, ts, 50_000_000, 0, 60.0)


def _streamed(shard: Shard, req: PartialRequest, lanes: int = 1) -> Partial:
    async def run() -> Partial:
        with ThreadPoolExecutor(lanes) as pool:
            offload = evaluate.Offload(pool, lanes=lanes)
            return await evaluate.evaluate_partial(req, evaluate.ShardSlices(shard, lanes=lanes).slices, offload)

    return asyncio.run(run())


def _same(req: PartialRequest, a: Partial, b: Partial) -> None:
    """The same answer from both partials, and each group in one row: the
    slices' partials are folded (planner.fold_partials), which sums in
    another order than one pass over all series, so values agree to
    rounding (exactly where no sum is involved)."""
    assert a.op == b.op
    assert len(set(a.rows)) == len(a.rows)
    assert a.samples == b.samples
    node = evaluate.find_node(req)
    assert isinstance(node, ast.AggregateExpr)
    x = merge_partials(evaluate.evaluator(req), node, [a], req.ts)
    y = merge_partials(evaluate.evaluator(req), node, [b], req.ts)
    if node.op in ("topk", "bottomk"):
        # Which of several equal values is kept depends on the candidates
        # the heap sees (as across shards): the values per step agree.
        for t in range(len(req.ts)):
            got = np.sort(x.values[x.present[:, t], t])
            assert np.array_equal(got, np.sort(y.values[y.present[:, t], t]), equal_nan=True)
        return
    assert x.labels == y.labels
    assert np.array_equal(x.present, y.present) and np.array_equal(x.drop_name, y.drop_name)
    assert np.allclose(x.values, y.values, rtol=1e-12, atol=0, equal_nan=True)


@pytest.mark.parametrize("text", QUERIES)
@pytest.mark.parametrize("slices", [(1, 1, 1), (7, 50, 500), None])
@pytest.mark.parametrize("lanes", [1, 3])
def test_streamed_equals_whole_select(shard: Shard, text: str, slices, lanes: int, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    start, end = T0 + 600_000, T0 + (N_SAMPLES - 1) * STEP
    for step in (60_000, 0):
        req = _request(text, start, end if step else start, step)
        ref = asyncio.run(evaluate.evaluate_partial(req, evaluate.whole(shard.select)))
        if slices is not None:
            read, points, samples = slices
            monkeypatch.setattr(evaluate, "SELECT_SLICE", read)
            monkeypatch.setattr(evaluate, "CHUNK_POINTS", points)
            monkeypatch.setattr(evaluate, "SLICE_SAMPLES", samples)
            monkeypatch.setattr(evaluate, "INLINE_POINTS", 0)  # every read and evaluation in the pool
        _same(req, _streamed(shard, req, lanes), ref)
        monkeypatch.undo()


def test_no_series_gives_an_empty_partial(shard: Shard) -> None:
    req = _request("sum(nothing)", T0, T0 + 3_600_000, 60_000)
    p = _streamed(shard, req)
    assert p.rows == [] and p.samples == 0


def test_byte_budget_counts_one_slice_at_a_time(shard: Shard, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    req = _request("sum(count_over_time(m[10m]))", T0 + 600_000, T0 + (N_SAMPLES - 1) * STEP, 60_000)
    whole = 16 * N_SERIES * N_SAMPLES
    req.max_bytes = whole // 2
    with pytest.raises(TooManySamplesError):
        _streamed(shard, req)  # the default slice holds every series
    monkeypatch.setattr(evaluate, "SELECT_SLICE", 4)
    monkeypatch.setattr(evaluate, "SLICE_SAMPLES", 4 * N_SAMPLES)
    got = _streamed(shard, req)
    req.max_bytes = 0
    _same(req, got, asyncio.run(evaluate.evaluate_partial(req, evaluate.whole(shard.select))))


@pytest.mark.parametrize("max_series", [1000, 5])
def test_read_slices_are_sized_by_samples(shard: Shard, monkeypatch, max_series: int) -> None:  # type: ignore[no-untyped-def]
    # Slices have about SLICE_SAMPLES decoded samples' worth of series (at
    # most max_series), the first one too: the SELECT_SLICE series planned
    # to learn the rate are not a slice of their own; together still every
    # series once, in label order.
    monkeypatch.setattr(evaluate, "SELECT_SLICE", 2)
    monkeypatch.setattr(evaluate, "SLICE_SAMPLES", 8 * N_SAMPLES)
    matchers = parse('m{job!=""}').matchers  # type: ignore[attr-defined]

    async def sizes() -> list[list[Labels]]:
        src = evaluate.ShardSlices(shard).slices(matchers, T0, T0 + N_SAMPLES * STEP, max_series)
        return [read().labels async for _, _, read in src]

    got = asyncio.run(sizes())
    want = (6, 10) if max_series > 10 else (max_series, max_series)
    assert all(want[0] <= len(g) <= want[1] for g in got[:-1])
    assert [lb for g in got for lb in g] == sorted(s.labels for s in shard.select(matchers, T0, T0 + N_SAMPLES * STEP))


@pytest.mark.parametrize("inline_read, want", [(20_000, [40]), (10_000, [20, 20])])
def test_lanes_split_a_selection_evenly_when_it_reads_more_than_runs_inline(
    shard: Shard, monkeypatch, inline_read: int, want: list[int]  # type: ignore[no-untyped-def]
) -> None:
    # 40 series x 480 samples: a read a lone piece may do on the loop stays
    # one slice for two lanes; a bigger one is cut in halves, not in the
    # probe's 32 series and the 8 left.
    monkeypatch.setattr(evaluate, "SELECT_SLICE", 32)
    monkeypatch.setattr(evaluate, "INLINE_POINTS", 1_000)
    monkeypatch.setattr(evaluate, "INLINE_IDLE_SAMPLES", inline_read)
    matchers = parse('m{job!=""}').matchers  # type: ignore[attr-defined]

    async def sizes() -> list[int]:
        src = evaluate.ShardSlices(shard, lanes=2).slices(matchers, T0, T0 + N_SAMPLES * STEP, 1 << 20)
        return [n async for n, _, _ in src]

    assert asyncio.run(sizes()) == want


def _over_ipc(p: Partial, n_steps: int, with_first: bool = True) -> Partial:
    async def go() -> Partial:
        reader = asyncio.StreamReader()
        for part in ipc.encode_frame(evaluate.partial_response(3, p, with_first)):
            reader.feed_data(bytes(part))
        reader.feed_eof()
        return evaluate.parse_partial(await ipc.read_frame(reader), n_steps)

    return asyncio.run(go())


@pytest.mark.parametrize("text", QUERIES)
def test_partials_merge_the_same_after_a_frame(shard: Shard, text: str) -> None:
    # Partials that crossed a frame merge to what the in-process ones give,
    # in the same order (the router orders groups by their `first` keys).
    req = _request(text, T0 + 600_000, T0 + (N_SAMPLES - 1) * STEP, 60_000)
    half = len(shard.index) // 2

    def part(lo: int, hi: int) -> Partial:
        def select(ms, mint, maxt):  # type: ignore[no-untyped-def]
            return [s for s in shard.select(ms, mint, maxt) if lo <= int(s.labels.get("i")) < hi]

        return asyncio.run(evaluate.evaluate_partial(req, evaluate.whole(select)))

    parts = [part(0, half), part(half, N_SERIES)]
    sent = [_over_ipc(p, len(req.ts)) for p in parts]
    for p, q in zip(parts, sent):
        assert list(q.rows) == list(p.rows)
    # `first` keys of both parts sort the same way after the trip.
    firsts = [(a, b) for p, q in zip(parts, sent) for a, b in zip(p.first, q.first)]
    assert sorted(firsts, key=lambda x: x[0]) == sorted(firsts, key=lambda x: x[1])
    node = evaluate.find_node(req)
    local = merge_partials(evaluate.evaluator(req), node, parts, req.ts)
    remote = merge_partials(evaluate.evaluator(req), node, sent, req.ts)
    assert local.labels == remote.labels and local.labels
    assert np.array_equal(local.values, remote.values, equal_nan=True)
    assert np.array_equal(local.present, remote.present) and np.array_equal(local.drop_name, remote.drop_name)


@pytest.mark.parametrize("text", QUERIES)
def test_a_lone_shards_partial_merges_the_same_without_first_series(shard: Shard, text: str) -> None:
    # The router's only shard leaves its groups' first series out (its rows
    # are in their order already): the same answer, in the same order.
    req = _request(text, T0 + 600_000, T0 + (N_SAMPLES - 1) * STEP, 60_000)
    p = _streamed(shard, req, lanes=3)
    full, bare = _over_ipc(p, len(req.ts)), _over_ipc(p, len(req.ts), with_first=False)
    assert not bare.first and (full.first or not p.first)
    node = evaluate.find_node(req)
    a = merge_partials(evaluate.evaluator(req), node, [full], req.ts)
    b = merge_partials(evaluate.evaluator(req), node, [bare], req.ts)
    assert a.labels == b.labels and a.labels
    assert np.array_equal(a.values, b.values, equal_nan=True)
    assert np.array_equal(a.present, b.present) and np.array_equal(a.drop_name, b.drop_name)


def _burn(seconds: float) -> None:
    t0 = time.thread_time()
    while time.thread_time() - t0 < seconds:
        pass


def test_offloaded_work_is_paced_only_while_ingest_is_busy() -> None:
    async def three_pieces(busy: bool) -> float:
        with ThreadPoolExecutor(1) as pool:
            run = evaluate.Offload(pool, share=0.25, busy=lambda: busy)
            t0 = time.monotonic()
            for _ in range(3):
                await run(evaluate.INLINE_POINTS + 1, _burn, 0.02)  # too many points to run inline, busy or not
            return time.monotonic() - t0

    paced = asyncio.run(three_pieces(True))
    assert paced >= 3 * 0.02 + 2 * 3 * 0.02  # each piece after the first waits 3x the last one's CPU
    assert asyncio.run(three_pieces(False)) < paced


class _CountingPool(ThreadPoolExecutor):
    """Records which functions were handed to the evaluation thread."""

    def __init__(self) -> None:
        super().__init__(1)
        self.ran: list[str] = []

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        self.ran.append(args[0].__name__)  # _cpu_timed(fn, args): the offloaded function
        return super().submit(fn, *args, **kwargs)


def test_a_lone_piece_reading_more_runs_on_the_loop_unless_ingest_is_busy() -> None:
    async def offloaded(points: int, samples: int, busy: bool, solo: bool = True) -> list[str]:
        with _CountingPool() as pool:
            await evaluate.Offload(pool, busy=lambda: busy)(points, _burn, 0, samples=samples, solo=solo)
            return pool.ran

    light, idle = evaluate.INLINE_POINTS, evaluate.INLINE_IDLE_SAMPLES
    assert asyncio.run(offloaded(light, light, True, solo=False)) == []
    assert asyncio.run(offloaded(light, light + 1, True)) == ["_burn"]
    assert asyncio.run(offloaded(light, idle, False)) == []
    assert asyncio.run(offloaded(light, idle, False, solo=False)) == ["_burn"]  # the lanes can take it
    assert asyncio.run(offloaded(light, idle + 1, False)) == ["_burn"]
    assert asyncio.run(offloaded(light + 1, 0, False)) == ["_burn"]  # evaluating points costs more


@pytest.mark.parametrize("slices, offloaded", [(None, False), ((7, 50, 2_000), True)])
def test_only_a_query_in_one_piece_reads_more_on_the_loop(shard: Shard, monkeypatch, slices, offloaded: bool) -> None:  # type: ignore[no-untyped-def]
    """Pieces of a query in several slices go to the lanes, which can run
    them side by side; a lone one up to INLINE_IDLE_SAMPLES stays here."""
    monkeypatch.setattr(evaluate, "INLINE_POINTS", 1_000)  # points: 1 a series; samples: up to 480 a series
    if slices is not None:
        for name, value in zip(("SELECT_SLICE", "CHUNK_POINTS", "SLICE_SAMPLES"), slices):
            monkeypatch.setattr(evaluate, name, value)
    req = _request("sum by (job) (sum_over_time(m[2h]))", T0 + N_SAMPLES * STEP, T0 + N_SAMPLES * STEP, 0)

    async def run() -> list[str]:
        with _CountingPool() as pool:
            await evaluate.evaluate_partial(req, evaluate.ShardSlices(shard).slices, evaluate.Offload(pool))
            return pool.ran

    ran = asyncio.run(run())
    assert ("evaluate" in ran) == offloaded


@pytest.mark.parametrize("slices, folds", [(None, 0), ((7, 50, 500), 1)])
def test_only_a_fold_of_several_pieces_goes_to_the_thread(shard: Shard, monkeypatch, slices, folds: int) -> None:  # type: ignore[no-untyped-def]
    """A single slice's partial is its own fold: handing it to the thread
    and back would cost a light query 30-180 us for nothing."""
    monkeypatch.setattr(evaluate, "INLINE_POINTS", 0)  # everything that has work goes to the pool
    if slices is not None:
        for name, value in zip(("SELECT_SLICE", "CHUNK_POINTS", "SLICE_SAMPLES"), slices):
            monkeypatch.setattr(evaluate, name, value)
    req = _request("sum by (job) (rate(m[5m]))", T0 + 600_000, T0 + (N_SAMPLES - 1) * STEP, 60_000)

    async def run() -> list[str]:
        with _CountingPool() as pool:
            await evaluate.evaluate_partial(req, evaluate.ShardSlices(shard).slices, evaluate.Offload(pool))
            return pool.ran

    ran = asyncio.run(run())
    assert ran.count("fold_partials") == folds
    assert ran.count("evaluate") >= 1
