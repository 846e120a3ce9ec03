"""The package's data flow is one-way: config → data/models → distill → onnx → trt → bench → pipeline → cli.

Every import between kd2trt modules, function-local ones included, must point to the same layer or a lower
one, and there must be no cycle; a module missing from LAYERS fails too, so a new module is placed on
purpose. The bottom layer also imports neither torch nor onnx, so that the recipe check, the calibration-cache
format and the TensorRT layer can depend on it without pulling them in.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kd2trt"

#: layer index of each module or package prefix (the longest matching prefix wins)
LAYERS = {
    "kd2trt": 0, "kd2trt.errors": 0, "kd2trt.targets": 0, "kd2trt.artifacts": 0, "kd2trt.layout": 0,
    "kd2trt.manifests": 0, "kd2trt.results": 0, "kd2trt.runner": 0, "kd2trt.metrics": 0,
    "kd2trt.provenance": 0,
    "kd2trt.config": 1,
    "kd2trt.data": 2, "kd2trt.models": 2, "kd2trt.torch_io": 2, "kd2trt.evaluation": 2,
    "kd2trt.distill": 3,
    "kd2trt.onnx": 4,
    "kd2trt.trt": 5,
    "kd2trt.bench": 6,
    "kd2trt.pipeline": 7,
    "kd2trt.cli": 8, "kd2trt.cli_flags": 8, "kd2trt.doctor": 8, "kd2trt.__main__": 8,
}
BOTTOM_FORBIDDEN = ("torch", "onnx", "onnxruntime", "numpy.typing")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, relative ones resolved; TYPE_CHECKING skipped."""
    name = _module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    skipped = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If)
               and "TYPE_CHECKING" in ast.unparse(node.test) for sub in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            found.append((base, node.lineno))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _layer(module: str) -> int:
    key = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len, default=None)
    if key is None:
        raise KeyError(module)
    return LAYERS[key]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {target for target, _ in _imports(path) if target in modules and target != name}
            for name, path in modules.items()}


def test_every_module_has_a_layer() -> None:
    missing = [name for name in _modules() if not any(name == k or name.startswith(k + ".") for k in LAYERS
                                                      if k != "kd2trt") and name != "kd2trt"]
    assert not missing, f"give these modules a layer in tests/test_layers.py: {missing}"


def test_imports_point_down_or_sideways() -> None:
    modules = _modules()
    upward = []
    for name, path in modules.items():
        for target, line in _imports(path):
            if target in modules and _layer(target) > _layer(name):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name} (layer {_layer(name)}) imports "
                              f"{target} (layer {_layer(target)})")
    assert not upward, "\n".join(upward)


def test_no_import_cycle() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", sorted(name for name in LAYERS if LAYERS[name] == 0 and name != "kd2trt"))
def test_the_bottom_layer_imports_neither_torch_nor_onnx(module: str) -> None:
    path = _modules()[module]
    heavy = [(target, line) for target, line in _imports(path) if target.split(".")[0] in BOTTOM_FORBIDDEN]
    assert not heavy, f"{module} imports {heavy}"


def test_the_checker_sees_a_planted_cycle_and_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """The checks above are only worth something if they fail: plant both faults in a copy and look."""
    import shutil

    copy = tmp_path / "kd2trt"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    config = copy / "config.py"
    planted = "\n\ndef _planted() -> None:\n    from kd2trt.pipeline import run_pipeline\n"
    config.write_text(config.read_text() + planted)
    monkeypatch.setitem(globals(), "PACKAGE", copy)
    with pytest.raises(AssertionError, match=r"kd2trt\.config \(layer 1\) imports kd2trt\.pipeline"):
        test_imports_point_down_or_sideways()
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycle()
