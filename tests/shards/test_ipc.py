"""Frames survive the round trip through a real stream, arrays bit-exact."""

from __future__ import annotations

import asyncio

import numpy as np

from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.model.matchers import Matcher, MatchOp
from athens.model.series import STALE_NAN, Series, SeriesSet
from athens.shards import ipc


def roundtrip(frame: ipc.Frame) -> ipc.Frame:
    async def go() -> ipc.Frame:
        reader = asyncio.StreamReader()
        for part in ipc.encode_frame(frame):
            reader.feed_data(bytes(part))
        reader.feed_eof()
        return await ipc.read_frame(reader)

    return asyncio.run(go())


def test_append_roundtrip():
    batch = WriteBatch.from_series(
        [
            (Labels([("__name__", "a"), ("x", "ü")]), np.array([1, 2]), np.array([1.5, STALE_NAN])),
            (Labels([("__name__", "b")]), np.array([3]), np.array([-0.0])),
        ]
    )
    got = ipc.parse_append(roundtrip(ipc.append_request(7, batch)))
    assert got.series == batch.series
    for a, b in [(got.hashes, batch.hashes), (got.series_idx, batch.series_idx), (got.ts, batch.ts)]:
        assert np.array_equal(a, b)
    assert np.array_equal(got.values.view(np.uint64), batch.values.view(np.uint64))


def test_select_and_series_roundtrip():
    req = roundtrip(ipc.select_request(3, [Matcher(MatchOp.RE, "job", "a|b")], -5, 10))
    assert req.req_id == 3 and req.op is ipc.Op.SELECT
    assert ipc.parse_matchers(req.meta) == [Matcher(MatchOp.RE, "job", "a|b")]
    series = [
        Series(Labels([("__name__", "m")]), np.array([1, 2], np.int64), np.array([1.0, 2.0])),
        Series(Labels([("__name__", "n")]), np.empty(0, np.int64), np.empty(0)),
    ]
    got = ipc.parse_series(roundtrip(ipc.series_response(3, series)))
    assert [s.labels for s in got] == [s.labels for s in series]
    assert np.array_equal(got[0].ts, [1, 2]) and len(got[1].ts) == 0
    assert not got.stale_free  # not known for a list of Series
    free = SeriesSet.of(series)
    free.stale_free = True  # as a shard's read finds it
    assert ipc.parse_series(roundtrip(ipc.series_response(3, free))).stale_free


def test_error_frame():
    f = roundtrip(ipc.error_response(9, "bad_data", "nope"))
    assert f.op is ipc.Op.ERROR and f.meta == {"type": "bad_data", "message": "nope"}


def _refs_frame(def_refs, def_labels, refs, req_id=1):
    n = len(refs)
    return roundtrip(ipc.append_refs_request(
        req_id, np.array(def_refs, np.int32), np.array([lb.identity_hash() for lb in def_labels], np.uint64),
        [lb.canonical() for lb in def_labels], np.array(refs, np.int32), np.arange(n, dtype=np.int32),
        np.arange(n, dtype=np.int64) + 1000, np.ones(n),
    ))


def test_ref_table_learns_series_ids_and_forgets_them_on_redefinition():
    a, b, c = (Labels([("__name__", x)]) for x in "abc")
    table = ipc.RefTable()
    batch, learn = table.batch(_refs_frame([0, 1], [a, b], [0, 1]))
    assert batch.series == [a, b] and batch.ids.tolist() == [-1, -1]
    learn(np.array([7, 9]))
    batch, learn_later = table.batch(_refs_frame([], [], [1, 0]))
    assert batch.ids.tolist() == [9, 7]
    # The router redefines ref 1 (a new ref space) while that append is queued:
    # its id for the old label set must not stick to the new one.
    batch, _ = table.batch(_refs_frame([1], [c], [1]))
    assert batch.series == [c] and batch.ids.tolist() == [-1]
    learn_later(np.array([9, 7]))
    batch, _ = table.batch(_refs_frame([], [], [0, 1]))
    assert batch.ids.tolist() == [7, -1]


def test_refs_of_forgotten_series_are_dropped_and_named_back_to_the_router():
    a, b = (Labels([("__name__", x)]) for x in "ab")
    table = ipc.RefTable()
    _, learn = table.batch(_refs_frame([0, 1, 2], [a, b, a], [0, 1, 2]))
    learn(np.array([7, 9, -1]))  # ref 2's id not learnt: it has its labels to look up
    assert table.drop(lambda ids: ids == 7) == 1
    assert table.labels[0] is None
    try:
        table.batch(_refs_frame([], [], [1, 0, 2, 5]))
        raise AssertionError("a dropped ref must be refused")
    except ipc.RefsUnknownError as e:
        assert e.refs.tolist() == [0, 5]  # dropped, and never defined
    batch, _ = table.batch(_refs_frame([0], [a], [0, 1, 2]))  # taught again
    assert batch.series == [a, b, a] and batch.ids.tolist() == [-1, 9, -1]
    f = roundtrip(ipc.error_response(3, ipc.REFS_UNKNOWN, "x", refs=[0, 5]))
    assert f.meta["refs"] == [0, 5]
