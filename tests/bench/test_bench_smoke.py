"""Smoke tests of the benchmark's data generator and remote-write encoder.

No servers: the encoder is checked against the `protobuf` package, with the
remote-write 1.0 messages described by descriptors built here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import snappy
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from bench import datagen, queries, rwencode

NOW_MS = 1_790_000_000_123


def _write_request_class():
    """prometheus.WriteRequest built from descriptors (no protoc needed)."""
    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="bench_remote.proto", package="benchprom", syntax="proto3")

    def msg(name, fields):
        m = fd.message_type.add(name=name)
        for fname, num, ftype, label, tname in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if tname:
                f.type_name = tname

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("Label", [("name", 1, F.TYPE_STRING, opt, ""), ("value", 2, F.TYPE_STRING, opt, "")])
    msg("Sample", [("value", 1, F.TYPE_DOUBLE, opt, ""), ("timestamp", 2, F.TYPE_INT64, opt, "")])
    msg("TimeSeries", [("labels", 1, F.TYPE_MESSAGE, rep, ".benchprom.Label"),
                       ("samples", 2, F.TYPE_MESSAGE, rep, ".benchprom.Sample")])
    msg("WriteRequest", [("timeseries", 1, F.TYPE_MESSAGE, rep, ".benchprom.TimeSeries")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("benchprom.WriteRequest"))


WriteRequest = _write_request_class()


@pytest.fixture(scope="module")
def ds() -> datagen.Dataset:
    return datagen.generate(3000, 60, seed=7, now_ms=NOW_MS)


def _same_float(a: float, b: float) -> bool:
    return np.float64(a).view(np.uint64) == np.float64(b).view(np.uint64)


def test_generation_is_reproducible_and_seeded() -> None:
    a = datagen.generate(400, 20, seed=3, now_ms=NOW_MS)
    b = datagen.generate(400, 20, seed=3, now_ms=NOW_MS)
    c = datagen.generate(400, 20, seed=4, now_ms=NOW_MS)
    assert a.labels == b.labels
    assert np.array_equal(a.values.view(np.uint64), b.values.view(np.uint64))
    assert np.array_equal(a.timestamps, b.timestamps)
    assert not np.array_equal(a.values, c.values)


def test_shape_labels_and_kinds(ds: datagen.Dataset) -> None:
    assert ds.values.shape == (3000, 60)
    assert len(ds.labels) == 3000 and len(set(ds.labels)) == 3000
    for ls in ds.labels:
        d = dict(ls)
        assert list(ls) == sorted(ls)
        assert {"__name__", "job", "instance"} <= d.keys()
    kinds = set(ds.kinds.tolist())
    assert {datagen.COUNTER, datagen.GAUGE_WALK, datagen.GAUGE_NOISE, datagen.HIST_BUCKET,
            datagen.HIST_SUM, datagen.HIST_COUNT} <= kinds
    assert np.isfinite(ds.values).all()
    ints = ds.values[ds.kinds == datagen.GAUGE_WALK]
    assert (ints == np.round(ints)).mean() > 0.5  # memory and file counts are integers


def test_timestamps_on_schedule_or_jittered_and_end_now(ds: datagen.Dataset) -> None:
    ts = ds.timestamps
    assert ts.max() <= NOW_MS
    assert NOW_MS - ts[:, -1].max() < datagen.INTERVAL_MS
    steps = np.diff(ts, axis=1)
    assert (steps[~ds.jittered] == datagen.INTERVAL_MS).all()
    jit = steps[ds.jittered]
    assert ds.jittered.any() and (~ds.jittered).any()
    assert (np.abs(jit - datagen.INTERVAL_MS) <= 2 * datagen.JITTER_MS).all()
    assert (jit != datagen.INTERVAL_MS).any()


def test_counters_only_drop_at_a_target_restart(ds: datagen.Dataset) -> None:
    v = ds.values[ds.kinds == datagen.COUNTER]
    tgt = ds.target[ds.kinds == datagen.COUNTER]
    drops = np.diff(v, axis=1) < 0
    assert drops.sum(axis=1).max() <= 1
    assert drops.any(), "no counter reset in 3000 series: resets are not generated"
    # All counters of a target restart at the same scrape.
    for t in np.unique(tgt[drops.any(axis=1)]):
        cols = {int(np.argmax(row)) for row in drops[tgt == t] if row.any()}
        assert len(cols) == 1


def test_histograms_are_cumulative_and_consistent(ds: datagen.Dataset) -> None:
    groups: dict[tuple, dict[float, np.ndarray]] = {}
    counts: dict[tuple, np.ndarray] = {}
    for i, ls in enumerate(ds.labels):
        d = dict(ls)
        key = (d["instance"], d.get("handler"))
        if d["__name__"] == "http_request_duration_seconds_bucket":
            groups.setdefault(key, {})[float(d["le"])] = ds.values[i]
        elif d["__name__"] == "http_request_duration_seconds_count":
            counts[key] = ds.values[i]
    complete = {k: g for k, g in groups.items() if len(g) == len(datagen.HIST_BOUNDS) and k in counts}
    assert complete
    for key, g in complete.items():
        stacked = np.array([g[le] for le in sorted(g)])
        assert (np.diff(stacked, axis=0) >= 0).all(), key
        assert np.array_equal(stacked[-1], counts[key])


def _decode(body: bytes) -> tuple[bytes, object]:
    raw = snappy.decompress(body)
    wr = WriteRequest()
    wr.ParseFromString(raw)
    return raw, wr


def test_encoded_requests_match_protobuf(ds: datagen.Dataset) -> None:
    reqs = rwencode.encode_dataset(ds, series_per_request=700, samples_per_series=7)
    assert sum(r.n_samples for r in reqs) == ds.n_samples_total
    for r in reqs[:3] + reqs[-2:]:
        raw, wr = _decode(r.body)
        assert len(raw) == r.raw_size
        assert wr.SerializeToString() == raw  # canonical field order and omissions
        s0 = r.chunk * 700
        j0 = r.window * 7
        assert len(wr.timeseries) == r.n_series
        for k, series in enumerate(wr.timeseries):
            i = s0 + k
            assert tuple((lb.name, lb.value) for lb in series.labels) == ds.labels[i]
            ts = ds.series_timestamps(i)
            got = [(s.timestamp, s.value) for s in series.samples]
            want = list(zip(ts[j0:j0 + 7].tolist(), ds.values[i, j0:j0 + 7].tolist()))
            assert len(got) == len(want)
            for (gt, gv), (wt, wv) in zip(got, want):
                assert gt == wt and _same_float(gv, wv)


def test_encoder_edge_values_round_trip() -> None:
    """Zero, negative zero, NaN, infinities, zero and negative timestamps."""
    values = np.array([[0.0, -0.0, math.nan, math.inf, -math.inf, 1e-300, -2.5]])
    ts = np.array([[-1000, 0, 1, 127, 128, 2**40, 2**62]], dtype=np.int64)
    ds = datagen.Dataset(
        labels=[(("__name__", "x"), ("ü", "ĺabel"))],
        kinds=np.zeros(1, np.uint8), target=np.zeros(1, np.int64), timestamps=ts, values=values,
        jittered=np.zeros(1, bool), seed=0, interval_ms=15_000,
    )
    raw = rwencode.Encoder(ds).raw(np.array([0]), 0, 7)
    wr = WriteRequest()
    wr.ParseFromString(raw)
    assert wr.SerializeToString() == raw
    (series,) = wr.timeseries
    assert [(lb.name, lb.value) for lb in series.labels] == [("__name__", "x"), ("ü", "ĺabel")]
    assert [s.timestamp for s in series.samples] == ts[0].tolist()
    for s, v in zip(series.samples, values[0]):
        assert _same_float(s.value, v)


def test_plan_sends_every_series_once_in_time_order() -> None:
    plan = rwencode.plan(n_series=4500, n_samples=10, series_per_request=2000, samples_per_series=3)
    seen = np.zeros((4500, 10), dtype=int)
    last_window = np.full(4500, -1)
    for w, c, s0, s1, j0, j1 in plan:
        assert s1 - s0 <= 2000 and j1 - j0 <= 3
        assert (last_window[s0:s1] < w).all()
        last_window[s0:s1] = w
        seen[s0:s1, j0:j1] += 1
    assert (seen == 1).all()
    assert [p[0] for p in plan] == sorted(p[0] for p in plan)


def test_diff_reports_series_and_value_differences() -> None:
    def vec(rows):
        return {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": m, "value": [1.0, str(v)]} for m, v in rows]}}

    ref, n = queries.normalise(vec([({"a": "1"}, 1.0), ({"a": "2"}, 2.0)]))
    assert n == 2
    same = queries.diff(ref, queries.normalise(vec([({"a": "2"}, 2.0), ({"a": "1"}, 1.0)]))[0])
    assert same["same_series"] and same["max_rel_diff"] == 0.0
    off = queries.diff(ref, queries.normalise(vec([({"a": "1"}, 1.1), ({"a": "3"}, 2.0)]))[0])
    assert not off["same_series"] and off["only_in_reference"] == 1 and off["only_here"] == 1
    assert off["max_rel_diff"] == pytest.approx(0.1 / 1.1)
    named = queries.diff(ref, queries.normalise(vec([({"__name__": "m", "a": "1"}, 1.0),
                                                      ({"__name__": "m", "a": "2"}, 2.0)]))[0])
    assert not named["same_series"] and named["same_series_ignoring_name"]
