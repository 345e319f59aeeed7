"""GET /federate next to Prometheus 2.42's, on the same remote-written series."""

from __future__ import annotations

import gzip
import math
import shutil
import struct
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import snappy

from e2e.harness import beside_prometheus, http, make_write

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="Debian's prometheus package is not installed (apt-get install prometheus)")

STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
MATCH = '{__name__=~"fed_.+|a_first"}'


def _series(now: int) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    """Values in each of the exposition's number forms, a label value to
    escape, series without an instance label, one ending in a staleness
    marker and one whose newest sample is older than the lookback delta."""
    recent = [now - 90_000, now - 60_000, now - 30_000]

    def gauge(labels: dict[str, str], last: float, ts: list[int] = recent) -> tuple[dict[str, str], list]:
        return labels, [(t, float(i)) for i, t in enumerate(ts[:-1])] + [(ts[-1], last)]

    return [
        gauge({"__name__": "fed_gauge", "job": "a", "instance": "i1"}, 1234567.0),
        gauge({"__name__": "fed_gauge", "job": "a", "instance": "i2"}, 1e-05),
        gauge({"__name__": "fed_gauge", "job": "b"}, -0.0),
        gauge({"__name__": "fed_gauge", "job": "c", "instance": "i3"}, 0.0001),
        gauge({"__name__": "fed_big", "job": "a", "zone": "z1"}, 1712345678.901),
        gauge({"__name__": "fed_big", "job": "b", "zone": "z1"}, 3e21),
        gauge({"__name__": "fed_big", "job": "c", "zone": "z1"}, -2.5e-7),
        gauge({"__name__": "fed_big", "job": "d", "zone": "z1"}, 123456.5),
        gauge({"__name__": "fed_special", "kind": "inf"}, math.inf),
        gauge({"__name__": "fed_special", "kind": "-inf"}, -math.inf),
        gauge({"__name__": "fed_special", "kind": "nan"}, math.nan),
        gauge({"__name__": "fed_special", "kind": "one"}, -1.0),
        gauge({"__name__": "fed_escaped", "path": 'a"b\\c\nd', "instance": "x"}, 2.0),
        gauge({"__name__": "fed_gone", "job": "a"}, STALE),
        gauge({"__name__": "fed_old", "job": "a"}, 7.0, [now - 700_000, now - 600_000]),
        gauge({"__name__": "fed_back", "job": "a"}, 8.0, [now - 600_000, now - 200_000]),
        gauge({"__name__": "a_first", "job": "a"}, 0.5),
        *(gauge({"__name__": "fed_many", "job": "a", "instance": f"host-{k:02d}"}, k * 1.5) for k in range(30)),
    ]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, prompb: Any) -> Iterator[tuple[str, str]]:
    body = snappy.compress(make_write(prompb, _series(int(time.time() * 1000) - 5_000)).SerializeToString())
    with beside_prometheus(tmp_path_factory.mktemp("federate"), body) as (athens, prom):
        yield athens.url, prom.url


def _federate(url: str, *matches: str) -> tuple[int, str]:
    query = urllib.parse.urlencode([("match[]", m) for m in matches])
    status, body = http("GET", f"{url}/federate?{query}")
    return status, body.decode()


def _families(text: str) -> list[tuple[str, list[str]]]:
    """(TYPE line, its sample lines sorted): Prometheus sorts families by
    name only, so the order of series within one is not its contract."""
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            out.append((line, []))
        else:
            out[-1][1].append(line)
    return [(t, sorted(lines)) for t, lines in out]


def test_federate_answers_as_prometheus(both: tuple[str, str]) -> None:
    athens, prom = both
    status, got = _federate(athens, MATCH)
    assert status == 200
    assert _families(got) == _families(_federate(prom, MATCH)[1])
    # What the comparison covers: the number forms, the escaping, the added
    # instance, and the series left out.
    assert "fed_gauge{instance=\"i1\",job=\"a\"} 1.234567e+06 " in got
    assert 'fed_escaped{instance="x",path="a\\"b\\\\c\\nd"} 2 ' in got
    assert "fed_big{job=\"b\",zone=\"z1\",instance=\"\"} 3e+21 " in got
    assert "fed_gauge{job=\"b\",instance=\"\"} 0 " in got
    assert "fed_gone" not in got and "fed_old" not in got and "fed_back{" in got
    assert got.startswith("# TYPE a_first untyped\n")


def test_federate_content_type(both: tuple[str, str]) -> None:
    ctypes = []
    for url in both:
        with urllib.request.urlopen(f"{url}/federate?match[]=a_first", timeout=10) as r:
            ctypes.append(r.headers["Content-Type"])
    assert ctypes[0] == ctypes[1] == "text/plain; version=0.0.4; charset=utf-8"


def test_federate_union_of_matchers(both: tuple[str, str]) -> None:
    athens, prom = both
    matches = ('fed_gauge{job="a"}', "fed_gauge", 'fed_special{kind=~".*inf"}')
    got = _federate(athens, *matches)[1]
    assert _families(got) == _families(_federate(prom, *matches)[1])
    assert got.count("instance=\"i1\"") == 1


@pytest.mark.parametrize("matches", [(), ("fed_nothing",)])
def test_federate_nothing(both: tuple[str, str], matches: tuple[str, ...]) -> None:
    for url in both:
        assert _federate(url, *matches) == (200, "")


def test_federate_selector_matching_everything(both: tuple[str, str]) -> None:
    """Unlike the series API, /federate takes a selector that matches the
    empty label set."""
    athens, prom = both
    assert _families(_federate(athens, '{job=~".*"}')[1]) == _families(_federate(prom, '{job=~".*"}')[1])


@pytest.mark.parametrize("match", ["fed_gauge{", "rate(fed_gauge[1m])", 'fed_gauge{job=~"("}'])
def test_federate_bad_match(both: tuple[str, str], match: str) -> None:
    athens, prom = both
    status, body = _federate(athens, match)
    assert (status, _federate(prom, match)[0]) == (400, 400)
    assert body.endswith("\n") and "parse error" in body, body


def test_federate_gzipped_for_scrapers(both: tuple[str, str]) -> None:
    athens, _ = both
    plain = _federate(athens, MATCH)[1].encode()
    assert len(plain) > 1024  # smaller answers go as they are
    query = urllib.parse.urlencode([("match[]", MATCH)])
    req = urllib.request.Request(f"{athens}/federate?{query}", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        body = gzip.decompress(r.read())
    assert _families(body.decode()) == _families(plain.decode())
