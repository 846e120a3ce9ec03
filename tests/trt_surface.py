"""TensorRT Python API surfaces per version, built from NVIDIA's real bindings -- a derived fixture, not invented.

``bench/results/trt_api_surface.json`` is what ``scripts/check_trt_api.py --introspect`` found when it imported
the real compiled ``tensorrt`` bindings of 8.6.1, 10.3.0, 10.13.3, 11.0 and 11.4 (PyPI's
``tensorrt-bindings`` / ``tensorrt-cu12-bindings`` wheels, stub ``libnvinfer``) and asked ``hasattr`` of the
real classes for every name kd2trt's TensorRT layer uses: whether it exists, whether it is a class, enum,
member, method or property, and each enum member's integer value. :func:`surface` turns one version's answers
into a module object with exactly those names:

* enums (``BuilderFlag``, ``NetworkDefinitionCreationFlag``, ...) with the members that version has, carrying
  the real values (``STRONGLY_TYPED`` is 1 on 10.x and 0 on 11.x);
* classes (``Builder``, ``IBuilderConfig``, ``INetworkDefinition``, ``ILayer``, ...) -- only where the JSON
  says the class exists -- whose properties and methods are those the version has. Instances record what is
  called and set on them (``calls``), and setting an attribute the version does not have raises
  AttributeError, as the pybind11 classes do (e.g. ``config.int8_calibrator = ...`` on 11.x).

Nothing here decides what TensorRT *does*; only which names each version has. Names kd2trt does not use are
not in the JSON and so not here; module-level functions (``nptype``) are left out. Where the data ends the
fixture ends: a method returns ``None`` unless a test gives it a result (``returns``).
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable
from functools import cache
from typing import Any, ClassVar

from tests.conftest import REPO

SURFACE_JSON = REPO / "bench" / "results" / "trt_api_surface.json"


@cache
def _data() -> dict[str, Any]:
    return json.loads(SURFACE_JSON.read_text())


def versions() -> list[str]:
    """The TensorRT versions whose bindings were introspected (e.g. ``"10.13.3.9"``)."""
    return [v["version"] for v in _data()["versions"] if v["method"].startswith("introspection")]


def _rows(version: str) -> list[dict[str, Any]]:
    for entry in _data()["versions"]:
        if entry["version"] == version:
            if not entry["method"].startswith("introspection"):
                raise ValueError(f"TensorRT {version} was checked by strings only; its surface is not two-sided")
            return entry["names"]
    raise KeyError(f"no surface for TensorRT {version} in {SURFACE_JSON}; have {versions()}")


class Member(int):
    """An enum member: an int with the bindings' value and its name."""

    def __new__(cls, value: int, name: str, enum: str) -> Member:
        member = super().__new__(cls, value)
        member.name, member.enum = name, enum
        return member

    def __repr__(self) -> str:
        return f"{self.enum}.{self.name}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Member):
            return (self.enum, self.name) == (other.enum, other.name)
        return NotImplemented

    __hash__ = int.__hash__


class SurfaceObject:
    """An instance of a bindings class of one version: only its properties can be set, every call is recorded."""

    _version: ClassVar[str] = ""
    _properties: ClassVar[frozenset[str]] = frozenset()
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, *args: Any) -> None:
        object.__setattr__(self, "calls", [("__init__", args)])
        object.__setattr__(self, "values", dict(self._defaults))
        object.__setattr__(self, "returns", {})

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._properties:
            raise AttributeError(f"TensorRT {self._version}'s {type(self).__name__} has no attribute {name!r}")
        self.values[name] = value
        self.calls.append((name + "=", value))


def _property(name: str) -> property:
    def get(self: SurfaceObject) -> Any:
        return self.values.get(name)

    def put(self: SurfaceObject, value: Any) -> None:
        SurfaceObject.__setattr__(self, name, value)

    return property(get, put)


def _method(name: str) -> Callable[..., Any]:
    def call(self: SurfaceObject, *args: Any) -> Any:
        self.calls.append((name, args))
        result = self.returns.get(name)
        return result(*args) if callable(result) else result

    call.__name__ = name
    return call


def surface(version: str, *, defaults: dict[str, dict[str, Any]] | None = None) -> types.ModuleType:
    """A ``tensorrt`` module with the names (and enum values) version ``version``'s real bindings have.

    ``defaults``: initial property values per class, e.g. ``{"Builder": {"num_DLA_cores": 2}}`` (the JSON says
    which properties exist, not what a device answers).
    """
    rows = [r for r in _rows(version) if r["present"]]
    module = types.ModuleType("tensorrt", f"TensorRT {version} surface (derived from its bindings)")
    members: dict[str, dict[str, int | None]] = {}
    kinds: dict[str, dict[str, str]] = {}
    for row in rows:
        if row["owner"] == "tensorrt":
            if row["name"] == "__version__":
                module.__version__ = version
            elif row["actual_kind"] in ("class", "enum"):
                kinds.setdefault(row["name"], {})
            continue
        kinds.setdefault(row["owner"], {})[row["name"]] = row["actual_kind"]
        if row["actual_kind"] == "member":
            members.setdefault(row["owner"], {})[row["name"]] = row.get("value")
    for owner, names in kinds.items():
        attrs: dict[str, Any] = {"_version": version,
                                 "_properties": frozenset(n for n, k in names.items() if k == "property"),
                                 "_defaults": dict((defaults or {}).get(owner, {}))}
        for name, kind in names.items():
            if kind == "property":
                attrs[name] = _property(name)
            elif kind == "method":
                attrs[name] = _method(name)
        cls = type(owner, (SurfaceObject,), attrs)
        for name, value in members.get(owner, {}).items():
            if value is None:
                raise ValueError(f"{SURFACE_JSON}: TensorRT {version} {owner}.{name} has no recorded value; "
                                 "regenerate it with scripts/check_trt_api.py --introspect")
            setattr(cls, name, Member(value, name, owner))
        setattr(module, owner, cls)
    return module


def builder_objects(trt: types.ModuleType, layers: list[str] = ()) -> tuple[Any, Any, Any]:
    """``(builder, network, config)`` of a surface, wired as TensorRT returns them (profiles are new objects).

    ``layers``: the names of the network's layers (``ILayer`` instances, where the version has the class).
    """
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    network = trt.INetworkDefinition()
    layer_objects = []
    for name in layers:
        layer = trt.ILayer()
        layer.name = name
        layer.calls.clear()
        layer_objects.append(layer)
    network.values["num_layers"] = len(layer_objects)
    network.returns["get_layer"] = lambda index: layer_objects[index]
    config = trt.IBuilderConfig()
    builder.returns["create_network"] = lambda flags: network
    builder.returns["create_builder_config"] = lambda: config
    builder.returns["create_optimization_profile"] = lambda: trt.IOptimizationProfile()
    return builder, network, config
