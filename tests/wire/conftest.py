"""The remote write 2.0 messages, compiled by protoc from tests/proto/remote_v2.proto."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

PROTO_DIR = Path(__file__).parent.parent / "proto"


def compile_v2(out: Path):  # type: ignore[no-untyped-def]
    from grpc_tools import protoc

    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", str(PROTO_DIR / "remote_v2.proto")])
    assert rc == 0, "protoc failed"
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("remote_v2_pb2")
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="session")
def prompb_v2(tmp_path_factory: pytest.TempPathFactory):
    return compile_v2(tmp_path_factory.mktemp("pbv2"))
