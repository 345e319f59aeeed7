"""The remote write 2.0 messages, compiled by protoc from tests/proto/remote_v2.proto."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from compiled_proto import compile_proto

PROTO_DIR = Path(__file__).parent.parent / "proto"


def compile_v2(out: Path) -> ModuleType:
    return compile_proto(PROTO_DIR / "remote_v2.proto", out)


@pytest.fixture(scope="session")
def prompb_v2(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return compile_v2(tmp_path_factory.mktemp("pbv2"))
