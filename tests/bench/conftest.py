"""Make the repository's `bench` package importable however pytest is started.

Without the repository root on sys.path (plain `pytest` rather than
`python -m pytest`), `import bench` would find this tests/bench directory as
a namespace package instead."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
_mod = sys.modules.get("bench")
if _mod is not None and getattr(_mod, "__file__", None) is None:
    del sys.modules["bench"]  # a namespace package picked up by mistake
