"""xAI's message classes, from the `xai-sdk` package's generated modules, without the SDK.

The relay parses copies of gRPC messages with the classes xAI itself ships in
``xai_sdk/proto/v5`` (protobuf 5) and ``xai_sdk/proto/v6`` (protobuf 6 and 7): a well-kept copy
of xai-proto, already generated, and the same code the SDK on the other end runs. Chosen over
generating them from xai-proto at build time: no build step and no grpcio-tools, and a newer
xai-sdk brings newer fields with no release of ours.

Importing ``xai_sdk.proto`` the ordinary way would first run ``xai_sdk/__init__.py``, which
imports the whole client (pydantic, opentelemetry, requests): about 18 MB of RSS and 0.3 s of
start-up for a daemon that only needs the message classes. So `load` imports the generated
modules alone, from the directory the installed package has them in, as submodules of a package
of ours (their imports of each other are relative). They register the same descriptors as the
SDK's own import does, and protobuf hands both the same classes: an app that imports
``xai_sdk`` in the daemon's process (the tests do) sees no difference. When the package is laid
out otherwise than expected, `load` falls back to the ordinary import.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import google.protobuf

_PACKAGE = "daemon.grpc_relay._xai_proto"
#: The generated modules the relay reads (each imports its own dependencies).
MODULES = (
    "auth_pb2",
    "batch_pb2",
    "chat_pb2",
    "deferred_pb2",
    "image_pb2",
    "sample_pb2",
    "video_pb2",
)


def _directory() -> Path | None:
    """Where the installed xai-sdk keeps the modules generated for this protobuf (its own
    rule: v5 for protobuf 5, v6 for 6 and 7); None when it is not there."""
    spec = importlib.util.find_spec("xai_sdk")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    major = int(google.protobuf.__version__.split(".")[0])
    root = Path(next(iter(spec.submodule_search_locations))) / "proto"
    found = root / ("v5" if major == 5 else "v6")
    return found if (found / "chat_pb2.py").is_file() else None


def load() -> dict[str, Any]:
    """The generated modules of `MODULES` by name (``"chat_pb2"`` → module). Raises
    `ImportError` when xai-sdk is not installed."""
    directory = _directory()
    if directory is None:
        proto = importlib.import_module("xai_sdk.proto")
        return {name: getattr(proto, name) for name in MODULES}
    package = sys.modules.get(_PACKAGE)
    if package is None:
        package = types.ModuleType(_PACKAGE, "xai-sdk's generated protobuf modules")
        package.__path__ = [str(directory)]
        package.__package__ = _PACKAGE
        sys.modules[_PACKAGE] = package
    return {name: importlib.import_module(f"{_PACKAGE}.{name}") for name in MODULES}
