"""Series index: who the series of a shard are, and which ones a selector means.

Each series gets a dense local id (0, 1, 2, ...) in arrival order; ids are
the row numbers of the head's buffers and the keys of segment footers. The
identity of a series is its full label set: two label sets whose 64-bit
identity hashes collide still get two ids (the collision is counted).

Memory is per series, so it is kept in arrays where Python objects are not
needed: the label sets are Labels (reads hand them out), but the lookup by
label set is an open-addressing table of ids keyed by the identity hashes
(int32 slots; a found id is confirmed by comparing label sets), and the
postings are arrays of int32 ids. A dict keyed by the Labels, lists of
Python ints and the hashes the Labels cache cost ~145 bytes a series more
(docs/benchmarks.md). Grouping reads per-label numberings of the values
(value_codes), int32 by id, for the label names queries group by.

The registry is persisted in an append-only file of checksummed SERIES
records (docs/format/index.md). It is appended when the head is sealed, so
between seals the WAL's SERIES records are the durable copy; open() loads the
file and then replays the WAL, which re-registers the rest. Nothing ever
scans sample data to rebuild it.

Series whose every sample retention has deleted are forgotten (forget()):
their label sets and postings entries are dropped and their ids never
come back (a label set that is written again gets a new id): under churn
the index holds the label sets of the retention period, not of every
series ever seen (a forgotten id keeps a few bytes in the arrays by id).
The file records them in FORGOTTEN records.

Postings (label pair -> sorted ids) answer matchers: `=` and literal
alternations `=~"a|b"` are dictionary lookups, regexes with a literal prefix
scan only the values with that prefix, other regexes scan the values of one
label name (never the series). Negative matchers and matchers that match the
empty string are evaluated as complements: "all series except those with a
value the matcher rejects", which includes series lacking the label as
Prometheus requires.
"""

from __future__ import annotations

import logging
import os
import threading
from array import array
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path

import numpy as np
from sortedcontainers import SortedDict

from athens.kernels import kernel, read_only
from athens.model.labels import INTERNER, Labels
from athens.model.matchers import Matcher, MatchOp
from athens.shards import wal as walmod

log = logging.getLogger(__name__)

INDEX_MAGIC = b"ATHNSIDX"
INDEX_VERSION = 2  # 2: FORGOTTEN records (version 1 files are read, and upgraded by the first)
_READABLE_VERSIONS = (1, 2)
_INDEX_HEADER = INDEX_MAGIC + INDEX_VERSION.to_bytes(4, "little") + bytes(4)
INDEX_HEADER_SIZE = len(_INDEX_HEADER)  # 16

_EMPTY_IDS = np.empty(0, np.int64)
# The index file being rewritten (SeriesIndex.rewrite), renamed over it when whole.
REWRITE_SUFFIX = ".rewrite"
# Series per SERIES record of the index file (persist): bounds the encoding's
# temporaries to a few MB.
PERSIST_RECORD_SERIES = 8192
_REGEX_META = frozenset(".^$*+?{}[]\\|()")
# Label names whose value codes (SeriesIndex.value_codes) are kept, the name
# sets with them: 4 bytes a series each (at most 64 with a quarter of
# slack, next to the ~150 of the index itself); the least recently used
# goes first.
MAX_CODED_NAMES = 16
# The label APIs restricted to a selection number a name's values (or the
# name sets) for it once the selection holds 1/this of the ids; smaller
# selections walk their own label sets.
CODE_SELECTION_SHARE = 16


class IndexCorruptError(Exception):
    """The series index file has a bad header or contradicts itself."""


def regex_literal_prefix(pattern: str) -> str:
    """A literal string every match of the (fully anchored) regex starts with.

    Conservative: "" whenever unsure (alternation, groups, flags, escapes).
    A quantifier that may drop the preceding character removes it from the
    prefix ("ab?c" -> "a"); "+" keeps it ("ab+c" -> "ab").
    """
    if "|" in pattern:
        return ""
    out: list[str] = []
    for c in pattern:
        if c in _REGEX_META:
            if c in "*?{" and out:
                out.pop()
            break
        out.append(c)
    return "".join(out)


@kernel(cache=True)
def enter_kernel(table, hashes, forgotten, start, stop):  # pragma: no cover - jitted
    """Enter ids start..stop-1 into the table: int32 slots holding id + 1
    (0 = empty), probed linearly from the low bits of the id's hash;
    forgotten ids are left out."""
    mask = table.shape[0] - 1
    for sid in range(start, stop):
        if forgotten[sid]:
            continue
        j = np.int64(hashes[sid] & np.uint64(mask))
        while table[j] != 0:
            j = (j + 1) & mask
        table[j] = sid + 1


@kernel(cache=True)
def probe_kernel(table, hashes, forgotten, want, out):  # pragma: no cover - jitted
    """out[i] = the first id entered and not forgotten since whose hash is
    want[i], or -1."""
    mask = table.shape[0] - 1
    for i in range(want.shape[0]):
        h = want[i]
        j = np.int64(h & np.uint64(mask))
        out[i] = -1
        while True:
            s = table[j]
            if s == 0:
                break
            if hashes[s - 1] == h and not forgotten[s - 1]:
                out[i] = s - 1
                break
            j = (j + 1) & mask


def warm_up() -> None:
    """Compile (or load) the lookup kernels for the types the index passes them."""
    idx = SeriesIndex()
    lb = Labels([("a", "1")])
    idx.add(lb, 1)
    idx.lookup([lb], np.array([1], np.uint64))


def in_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether each id of a is in b (both sorted and unique), by binary
    searches of the shorter in the longer: np.intersect1d and np.setdiff1d
    sort both together, ~0.6 ms for one id against 20,000 (3 us here)."""
    if not len(a) or not len(b):
        return np.zeros(len(a), bool)
    if len(a) <= len(b):
        pos = np.searchsorted(b, a)
        np.minimum(pos, len(b) - 1, out=pos)
        return b[pos] == a  # type: ignore[no-any-return]
    pos = np.searchsorted(a, b)
    np.minimum(pos, len(a) - 1, out=pos)
    found = np.zeros(len(a), bool)
    found[pos[a[pos] == b]] = True
    return found


def _union(arrays: list[np.ndarray], n: int) -> np.ndarray:
    """The sorted ids of the postings of several values of one label name
    (disjoint: a series has one value per name) among ids below n. Past
    1/16 of the ids, marked in a mask of all ids rather than sorted: a
    regex matching 173 instances (20,000 series) took 2.6 ms in np.unique
    (hashing, then sorting), 50 us so."""
    if not arrays:
        return _EMPTY_IDS
    if len(arrays) == 1:
        return arrays[0]
    ids = np.concatenate(arrays)
    if 16 * len(ids) < n:
        ids.sort()
        return ids
    mask = np.zeros(n, bool)
    mask[ids] = True
    return np.flatnonzero(mask)


class SeriesIndex:
    """In-memory registry id <-> labels with postings; persisted by persist()."""

    def __init__(self) -> None:
        # By id; None for a forgotten id (forget(): selections never return those).
        self.labels: list[Labels | None] = []
        # Identity hashes by id (capacity grows by doubling), and the distinct
        # hashes of ids [0, _checked) sorted: collisions are counted when
        # asked for, over the series added since (a dict of Python ints did
        # it per series for ~100 bytes a series; these cost ~16).
        self._hashes = np.empty(1024, np.uint64)
        # Forgotten ids (forget()), by id, with the same capacity.
        self._forgotten = np.zeros(1024, bool)
        self.forgotten = 0
        self._distinct = np.empty(0, np.uint64)
        self._checked = 0
        self._collisions = 0
        # Lookup table over the ids [0, _entered); later ids are entered
        # by the next lookup (add() is called per series, lookup per batch).
        self._table = np.zeros(1024, np.int32)
        self._entered = 0
        # (name, value) -> int32 ids, ascending; SortedDict by value per name.
        self._postings: dict[str, SortedDict] = {}
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        # _numbered: label name (None: name sets) -> (value -> number,
        # numbers by id, ids numbered).
        self._codes: dict[str | None, tuple[dict[Hashable, int], np.ndarray, int]] = {}
        self._codes_lock = threading.Lock()
        # persist() runs on a seal's thread, persist_forgotten() on the loop.
        self._file_lock = threading.Lock()
        self.persisted = 0

    def __len__(self) -> int:
        """The ids given so far (forgotten ones included): the id space."""
        return len(self.labels)

    @property
    def live(self) -> int:
        """Series not forgotten."""
        return len(self.labels) - self.forgotten

    def is_forgotten(self, ids: np.ndarray) -> np.ndarray:
        """Whether each id (all below len(self)) was forgotten."""
        return self._forgotten[ids]  # type: ignore[no-any-return]

    # --- registry ------------------------------------------------------------

    def lookup(self, series: Sequence[Labels], hashes: np.ndarray) -> np.ndarray:
        """Ids of the given label sets (`hashes`: their identity hashes), -1
        for unknown ones."""
        want = read_only(np.asarray(hashes, np.uint64))  # the kind warm_up() compiles for
        out = np.empty(len(want), np.int64)
        if len(want) == 0:
            return out
        probe_kernel(self._entered_table(), self._hashes, self._forgotten, want, out)
        labels = self.labels
        for i, sid in enumerate(out.tolist()):
            if sid >= 0 and labels[sid] != series[i]:  # another label set, same hash
                out[i] = self._find(series[i], int(want[i]))
        return out

    def _entered_table(self) -> np.ndarray:
        n = len(self.labels)
        if self._entered < n:
            if 2 * n > len(self._table):  # at most half full
                size = 2 * len(self._table)
                while 2 * n > size:
                    size *= 2
                self._table = np.zeros(size, np.int32)
                self._entered = 0
            enter_kernel(self._table, self._hashes, self._forgotten, self._entered, n)
            self._entered = n
        return self._table

    def _find(self, labels: Labels, h: int) -> int:
        """The id of `labels` among all ids with hash h (hash collisions: rare)."""
        for sid in np.flatnonzero(self._hashes[: len(self.labels)] == np.uint64(h)).tolist():
            if self.labels[sid] == labels:
                return sid
        return -1

    def add(self, labels: Labels, h: int) -> int:
        """Register a new series (the caller looked it up: not known); returns its id."""
        sid = len(self.labels)
        self._reserve(sid + 1)
        self._hashes[sid] = h
        with self._codes_lock:  # value_codes reads the postings on evaluation threads
            self.labels.append(labels)
            for name, value in labels:
                values = self._postings.get(name)
                if values is None:
                    values = self._postings[name] = SortedDict()
                ids = values.get(value)
                if ids is None:
                    values[value] = array("i", (sid,))
                else:
                    ids.append(sid)
                    self._cache.pop((name, value), None)
        return sid

    def _reserve(self, n: int) -> None:
        """Room for ids below n in the arrays by id (doubling)."""
        if n > len(self._hashes):
            grow = max(n, 2 * len(self._hashes)) - len(self._hashes)
            self._hashes = np.concatenate((self._hashes, np.empty(grow, np.uint64)))
            self._forgotten = np.concatenate((self._forgotten, np.zeros(grow, bool)))

    def _add_forgotten(self, k: int) -> None:
        """Give the next k ids to series already forgotten (a rewritten
        index file's FORGOTTEN records, rewrite())."""
        n = len(self.labels)
        self._reserve(n + k)
        self._hashes[n : n + k] = 0
        self._forgotten[n : n + k] = True
        with self._codes_lock:
            self.labels.extend([None] * k)
        self.forgotten += k

    def register(self, sid: int, h: int, labels: Labels) -> bool:
        """Replay path: make series `sid` exist with these labels.

        Returns True if it was new. Records are idempotent (a series may be
        both in the index file and in a not yet deleted WAL segment).
        """
        if sid < len(self.labels):
            if self.labels[sid] is None:
                return False  # forgotten (a WAL segment not deleted yet may still name it)
            if self.labels[sid] != labels:
                raise IndexCorruptError(
                    f"series id {sid} is {self.labels[sid]} but a record says {labels}"
                )
            return False
        if sid != len(self.labels):
            raise IndexCorruptError(
                f"series id {sid} recorded but only {len(self.labels)} series are known"
            )
        self.add(labels, h)
        return True

    def hash_of(self, sid: int) -> int:
        return int(self._hashes[sid])

    @property
    def hash_collisions(self) -> int:
        """Series whose identity hash an earlier series already has (each
        still has its own id: the label set is the key). Forgotten series
        are left out: a label set written again after it was forgotten has
        the hash of its old id."""
        n = len(self.labels)
        if self._checked < n:
            checking = self._checked + np.flatnonzero(~self._forgotten[self._checked : n])
            new = self._hashes[checking]
            fresh, first = np.unique(new, return_index=True)
            pos = np.searchsorted(self._distinct, fresh)
            known = pos < len(self._distinct)
            known[known] = self._distinct[pos[known]] == fresh[known]
            clash = np.ones(len(new), bool)
            clash[first[~known]] = False  # the first of each hash not seen before
            for i in np.flatnonzero(clash).tolist():  # rare: each is logged
                sid = int(checking[i])
                h = self._hashes[sid]
                other = int(np.flatnonzero((self._hashes[:sid] == h) & ~self._forgotten[:sid])[0])
                log.warning(
                    "series hash collision: %s and %s share hash %#018x",
                    self.labels[other], self.labels[sid], int(h),
                )
            self._collisions += int(clash.sum())
            self._distinct = np.insert(self._distinct, pos[~known], fresh[~known])
            self._checked = n
        return self._collisions

    def forget(self, ids: np.ndarray) -> int:
        """Drop series `ids` (sorted, unique): their label sets, their ids in
        the postings (values and names left without series go), their entries
        in the lookup table (a label set written again gets a new id). The
        caller knows no data of theirs is left. Returns how many were not
        forgotten before."""
        ids = np.asarray(ids, np.int64)
        ids = ids[~self._forgotten[ids]]
        if not len(ids):
            return 0
        with self._codes_lock:
            touched: set[tuple[str, str]] = set()
            labels = self.labels
            for sid in ids.tolist():
                touched.update(labels[sid] or ())
                labels[sid] = None
            self._forgotten[ids] = True
            gone = self._forgotten
            for name, value in touched:
                values = self._postings[name]
                kept = np.frombuffer(values[value].tobytes(), np.int32)
                kept = kept[~gone[kept]]
                self._cache.pop((name, value), None)
                if len(kept):
                    values[value] = array("i", kept.tobytes())
                    continue
                del values[value]
                if not values:
                    del self._postings[name]
            self._codes.clear()  # numbered values that may be gone: renumbered when next used
        # No longer hashes a new series could collide with (the lookup
        # table skips forgotten ids too).
        c = self._checked
        self._distinct = np.unique(self._hashes[:c][~gone[:c]])
        self.forgotten += len(ids)
        return len(ids)

    def value_codes(self, name: str) -> tuple[np.ndarray, int]:
        """(codes, n): codes[id] in 1..n numbers series id's value of label
        `name`, 0 if it has none. What grouping compares instead of label
        sets (model.series.StoredLabels). First numbered from the postings,
        a write per value (at 100,000 series ~1 ms for `instance`, against
        ~29 ms reading every label set, which at a million series held the
        GIL and so the event loop for ~0.3 s)."""

        codes, numbers = self._value_numbers(name)
        return codes, len(numbers)

    def _value_numbers(self, name: str) -> tuple[np.ndarray, dict[Hashable, int]]:
        """value_codes' codes, and the numbers of the values (numbered 1, 2, ...
        in the dict's order)."""

        def from_postings(n: int) -> tuple[dict[Hashable, int], np.ndarray]:
            codes = np.zeros(n + n // 4, np.int32)
            numbers: dict[Hashable, int] = {}
            for k, (value, ids) in enumerate(self._postings.get(name, {}).items(), start=1):
                numbers[value] = k
                codes[np.frombuffer(ids.tobytes(), np.int32)] = k
            return numbers, codes

        return self._numbered(name, lambda lb: lb.get(name) or None, from_postings)

    def has_label(self, name: str) -> bool:
        """Whether any series has label `name`."""
        return name in self._postings

    def name_sets(self) -> tuple[np.ndarray, list[tuple[str, ...]]]:
        """(codes, sets): codes[id] = k numbers series id's tuple of label
        names, sets[k - 1]. Which names a `without` grouping keys on."""
        codes, numbers = self._numbered(None, lambda lb: tuple(n for n, _ in lb.pairs))
        with self._codes_lock:  # another thread may be numbering more
            return codes, list(numbers)

    def _numbered(
        self,
        key: str | None,
        of: Callable[[Labels], Hashable | None],
        initial: Callable[[int], tuple[dict[Hashable, int], np.ndarray]] | None = None,
    ) -> tuple[np.ndarray, dict[Hashable, int]]:
        """Numbers (1, 2, ...; 0 for None) of of(labels) by series id, kept
        per `key`: on first use from initial(n) if given (numbers and codes
        of the ids below n), else from the label sets; then for the series
        added since at each call. Evaluation threads call it while the loop
        adds series (add() takes the same lock to change the postings)."""
        with self._codes_lock:
            n = len(self.labels)
            entry = self._codes.pop(key, None)  # re-inserted: most recently used
            if entry is None and initial is not None:
                entry = (*initial(n), n)
            numbers, codes, done = entry if entry is not None else ({}, np.zeros(0, np.int32), 0)
            if done < n:
                if len(codes) < n:
                    grown = np.zeros(n + n // 4, np.int32)
                    grown[:done] = codes[:done]
                    codes = grown
                labels = self.labels
                number = numbers.setdefault
                codes[done:n] = [0 if (lb := labels[i]) is None or (v := of(lb)) is None
                                 else number(v, len(numbers) + 1) for i in range(done, n)]
            self._codes[key] = (numbers, codes, n)
            if len(self._codes) > MAX_CODED_NAMES:
                del self._codes[next(iter(self._codes))]
            return codes, numbers

    # --- postings / matchers ---------------------------------------------------

    def postings(self, name: str, value: str) -> np.ndarray:
        """Sorted ids of series with name=value."""
        key = (name, value)
        arr = self._cache.get(key)
        if arr is None:
            values = self._postings.get(name)
            ids = values.get(value) if values is not None else None
            if ids is None:
                return _EMPTY_IDS
            # tobytes() copies under the GIL: a buffer exported to another
            # thread would make the loop's next append() fail.
            arr = self._cache[key] = np.frombuffer(ids.tobytes(), np.int32).astype(np.int64)
        return arr

    def _values_matching(self, m: Matcher, values: SortedDict) -> list[str]:
        """Values of m.name matched by m's positive form (= for =/!=, =~ for =~/!~)."""
        positive = m if m.op in (MatchOp.EQ, MatchOp.RE) else Matcher(
            MatchOp.EQ if m.op is MatchOp.NE else MatchOp.RE, m.name, m.value
        )
        lits = positive.literal_alternatives()
        if lits is not None:
            return [v for v in lits if v in values]
        prefix = regex_literal_prefix(positive.value)
        if prefix:
            cands: Iterable[str] = _prefix_range(values, prefix)
            if positive.value == prefix + ".*":  # every value with the prefix (`.` matches all: (?s))
                return list(cands)
        else:
            cands = values.keys()
        return [v for v in cands if positive.matches(v)]

    def _matcher_ids(self, m: Matcher) -> tuple[np.ndarray, bool]:
        """(ids, complement): the matching ids, or the ids to remove if complement."""
        values = self._postings.get(m.name)
        if values is None:
            # Nobody has the label: every series matches iff "" does.
            return _EMPTY_IDS, m.matches_empty()
        positive_op = m.op in (MatchOp.EQ, MatchOp.RE)
        hits = self._values_matching(m, values)
        if m.matches_empty():
            # Keep all series except those whose value m rejects.
            if positive_op:
                hit_set = set(hits)
                rejected = [v for v in values.keys() if v not in hit_set]
            else:
                rejected = hits
            return self._union_of(m.name, rejected), True
        if positive_op:
            accepted = hits
        else:
            hit_set = set(hits)
            accepted = [v for v in values.keys() if v not in hit_set]
        return self._union_of(m.name, accepted), False

    def _union_of(self, name: str, values: list[str]) -> np.ndarray:
        arrays = [self.postings(name, v) for v in values]
        # Counted after reading the postings: add() appends a label set
        # before its id enters any postings (an evaluation thread may run this
        # while the loop adds series).
        return _union(arrays, len(self.labels))

    def select(self, matchers: Sequence[Matcher]) -> np.ndarray:
        """Sorted ids of the series matching every matcher."""
        include: list[np.ndarray] = []
        exclude: list[np.ndarray] = []
        for m in matchers:
            ids, complement = self._matcher_ids(m)
            (exclude if complement else include).append(ids)
        if include:
            include.sort(key=len)
            result = include[0]
            for other in include[1:]:
                if not len(result):
                    break
                result = result[in_sorted(result, other)]
        else:
            result = self._live_ids()
        for ids in exclude:
            if len(ids) and len(result):
                result = result[~in_sorted(result, ids)]
        return result

    def _live_ids(self) -> np.ndarray:
        n = len(self.labels)
        if not self.forgotten:
            return np.arange(n, dtype=np.int64)
        return np.flatnonzero(~self._forgotten[:n])

    def label_names(self, ids: np.ndarray | None = None) -> list[str]:
        """Sorted label names of the given series (all series if None)."""
        if ids is None or len(ids) == self.live:
            return sorted(self._postings)
        names: set[str] = set()
        if self._coding_pays(None, ids):
            # The distinct name sets among ids (a few dozen at most, usually),
            # not a walk over their label sets (35 ms at 78,000 series).
            codes, sets = self.name_sets()
            for k in _numbers_present(codes, ids, len(sets)):
                names.update(sets[k - 1])
            return sorted(names)
        labels = self.labels
        for sid in ids.tolist():
            names.update(n for n, _ in labels[sid])  # type: ignore[union-attr] # selected: not forgotten
        return sorted(names)

    def label_values(self, name: str, ids: np.ndarray | None = None) -> list[str]:
        """Sorted values of label `name` among the given series (all if None)."""
        values = self._postings.get(name)
        if values is None:
            return []
        if ids is None or len(ids) == self.live:
            return list(values.keys())
        if self._coding_pays(name, ids):
            # Which values' numbers occur among ids: one pass over their codes
            # (at 300,000 series, `instance` of one metric's 78,656: 4.1 ms
            # testing each value's postings against them before).
            codes, numbers = self._value_numbers(name)
            with self._codes_lock:  # another thread may be numbering more
                by_number = list(numbers)
            return sorted(by_number[k - 1] for k in _numbers_present(codes, ids, len(by_number)))  # type: ignore[misc]
        out: set[str] = set()
        labels = self.labels
        for sid in ids.tolist():
            v = labels[sid].get(name)  # type: ignore[union-attr] # selected: not forgotten
            if v:
                out.add(v)
        return sorted(out)

    def _coding_pays(self, key: str | None, ids: np.ndarray) -> bool:
        """Whether to answer from the codes of `key` (a label name; None: the
        name sets): when they are kept, or the selection is large enough to
        pay for numbering every series (a pass over all label sets or
        postings: ~0.3 s at a million series, against walking a few ids)."""
        with self._codes_lock:
            kept = key in self._codes
        return kept or CODE_SELECTION_SHARE * len(ids) >= len(self.labels)

    # --- persistence -------------------------------------------------------------

    def load(self, path: Path) -> int:
        """Load the index file (if any); truncate a torn tail. Returns series
        loaded (forgotten ones included: they have ids). A rewrite the
        process did not finish is removed."""
        path.with_name(path.name + REWRITE_SUFFIX).unlink(missing_ok=True)
        if not path.exists():
            return 0
        data = path.read_bytes()
        if len(data) < INDEX_HEADER_SIZE:
            log.warning("series index %s shorter than its header; starting empty", path)
            _truncate(path, 0)
            return 0
        if data[:8] != INDEX_MAGIC:
            raise IndexCorruptError(f"{path}: bad magic {data[:8]!r}")
        version = int.from_bytes(data[8:12], "little")
        if version not in _READABLE_VERSIONS:
            raise IndexCorruptError(f"{path}: unsupported index version {version}")
        body = memoryview(data)[INDEX_HEADER_SIZE:]
        good = 0
        loaded = 0
        forgotten = []
        for off, rtype, payload in walmod.scan_records(body, _RECORD_TYPES):
            good = off + walmod.HEADER_SIZE + len(payload)
            if rtype == walmod.REC_FORGOTTEN:
                try:
                    ids = walmod.decode_ids(payload)
                except ValueError as e:
                    raise IndexCorruptError(f"{path}: {e}") from None
                n = len(self.labels)
                if len(ids) and ids[0] >= n:  # ids given to no SERIES record here (rewrite())
                    if not np.array_equal(ids, np.arange(n, n + len(ids))):
                        raise IndexCorruptError(f"{path}: forgotten ids from {int(ids[0])} skip ids after {n - 1}")
                    self._add_forgotten(len(ids))
                else:
                    forgotten.append(ids)
                continue
            for sid, h, labels in walmod.decode_series(payload, INTERNER):
                if self.register(sid, h, labels):
                    loaded += 1
        if good < len(body):
            log.warning(
                "series index %s: torn tail at offset %d, dropping %d bytes",
                path, INDEX_HEADER_SIZE + good, len(body) - good,
            )
            _truncate(path, INDEX_HEADER_SIZE + good)
        if forgotten:
            ids = np.unique(np.concatenate(forgotten))
            if len(ids) and int(ids[-1]) >= len(self.labels):
                raise IndexCorruptError(f"{path}: series id {int(ids[-1])} forgotten but never recorded")
            self.forget(ids)
        self.persisted = len(self.labels)
        return loaded

    def persist(self, path: Path) -> int:
        """Append series not yet in the file, fsync. Returns how many were written.

        One SERIES record per PERSIST_RECORD_SERIES series: encoded at once,
        the 200,000 new series of a worker's first seal (`medium --series
        400000`) held ~120 MB of temporaries (their tuples, the records'
        parts, the payload and its framed copy)."""
        with self._file_lock:
            return self._persist(path)

    def _persist(self, path: Path) -> int:
        n = len(self.labels)  # appends on the loop may go on meanwhile
        exists = path.exists()
        if n == self.persisted and exists:
            return 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if os.fstat(fd).st_size == 0:
                walmod._write_all(fd, _INDEX_HEADER)
            self._write_records(fd, self.persisted, n, forgotten=False)
            os.fsync(fd)
        finally:
            os.close(fd)
        if not exists:
            walmod.fsync_dir(path.parent)
        written = n - self.persisted
        self.persisted = n
        return written

    def rewrite(self, path: Path) -> int:
        """Replace the file by one without the SERIES records of forgotten
        series (their ids as FORGOTTEN records, in id order, so ids stay
        what they are), through a temporary file renamed over it. Every
        series must be in the file (persisted). Returns the bytes saved."""
        n = len(self.labels)
        if self.persisted != n:
            raise ValueError("rewrite() of an index with series not persisted yet")
        tmp = path.with_name(path.name + REWRITE_SUFFIX)
        with self._file_lock:
            before = path.stat().st_size
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                walmod._write_all(fd, _INDEX_HEADER)
                gone = self._forgotten[:n]
                cuts = np.flatnonzero(np.diff(gone.view(np.int8))) + 1
                for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), n]):  # runs of one kind
                    self._write_records(fd, lo, hi, forgotten=bool(gone[lo]))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            walmod.fsync_dir(path.parent)
            return before - path.stat().st_size

    def _write_records(self, fd: int, lo: int, hi: int, forgotten: bool) -> None:
        """Ids lo..hi-1 as SERIES records (or, forgotten, FORGOTTEN records),
        PERSIST_RECORD_SERIES a record."""
        for a in range(lo, hi, PERSIST_RECORD_SERIES):
            b = min(a + PERSIST_RECORD_SERIES, hi)
            if forgotten:
                rec = walmod.frame(walmod.REC_FORGOTTEN, walmod.encode_ids(np.arange(a, b)))
            else:
                rec = walmod.frame(walmod.REC_SERIES, walmod.encode_series(
                    [(i, self.hash_of(i), self.labels[i]) for i in range(a, b)]))
            walmod._write_all(fd, rec)

    def persist_forgotten(self, path: Path, ids: np.ndarray) -> None:
        """Append a FORGOTTEN record of `ids` (all persisted before: their
        SERIES records come first in the file) and fsync. A version 1 file
        is marked version 2 first (fsynced before the record): a reader of
        version 1 would take the record for a torn tail and cut it off,
        with what follows."""
        with self._file_lock:  # the file's only writer meanwhile
            fd = os.open(path, os.O_RDWR)
            try:
                if int.from_bytes(os.pread(fd, 4, 8), "little") != INDEX_VERSION:
                    os.pwrite(fd, INDEX_VERSION.to_bytes(4, "little"), 8)
                    os.fsync(fd)
                os.lseek(fd, 0, os.SEEK_END)
                walmod._write_all(fd, walmod.frame(walmod.REC_FORGOTTEN, walmod.encode_ids(ids)))
                os.fsync(fd)
            finally:
                os.close(fd)


_RECORD_TYPES = (walmod.REC_SERIES, walmod.REC_FORGOTTEN)


def _numbers_present(codes: np.ndarray, ids: np.ndarray, n: int) -> list[int]:
    """The numbers 1..n that codes[ids] holds (0, no value, left out)."""
    hit = np.zeros(n + 1, bool)
    hit[codes[ids]] = True
    return (np.flatnonzero(hit[1:]) + 1).tolist()


def _prefix_range(values: SortedDict, prefix: str) -> Iterable[str]:
    for v in values.irange(minimum=prefix):
        if not v.startswith(prefix):
            break
        yield v


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)
        os.fsync(f.fileno())
