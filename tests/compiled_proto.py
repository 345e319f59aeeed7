"""Compile a .proto with grpc_tools' protoc and import the generated module."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType


def compile_proto(proto: Path, out: Path) -> ModuleType:
    """The `<name>_pb2` module of proto, generated into out."""
    from grpc_tools import protoc

    rc = protoc.main(["protoc", f"-I{proto.parent}", f"--python_out={out}", str(proto)])
    assert rc == 0, f"protoc failed on {proto}"
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module(f"{proto.stem}_pb2")
    finally:
        sys.path.remove(str(out))
