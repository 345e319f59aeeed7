from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2e.harness import Athens


@pytest.fixture
def athens_factory(tmp_path: Path) -> Iterator[Callable[..., Athens]]:
    """Make (not start) Athens servers; every one is stopped at teardown."""
    made: list[Athens] = []

    def make(name: str = "data", **kw) -> Athens:  # type: ignore[no-untyped-def]
        a = Athens(tmp_path / name, **kw)
        made.append(a)
        return a

    yield make
    for a in made:
        if a.proc is not None and a.proc.poll() is None:
            a.stop()
        if a.proc is not None:
            a.kill_all()


@pytest.fixture
def athens(athens_factory: Callable[..., Athens]) -> Athens:
    return athens_factory().start()
