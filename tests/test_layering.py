"""The layering rule, read from the source with ``ast`` (every import, at module level or inside a function):

* the inference path and the models (``data``, ``models``, ``runtimes``, ``postprocess``, ``serve``, ``artifacts``)
  never import ``export``, ``calibration``, ``benchmarks`` or the CLI;
* no import cycle among modules, and no two packages import each other (a root module such as ``bundle.py`` counts
  as its own package).

Each rule is also run on a small synthetic tree in ``tmp_path`` that breaks it, so the test can fail.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# import name -> folder, as pyproject's package-dir maps them
PACKAGE_DIRS = {
    "edge_ad": ROOT / "edge_ad",
    "edge_ad.export": ROOT / "export",
    "edge_ad.calibration": ROOT / "calibration",
    "edge_ad.benchmarks": ROOT / "benchmarks",
}
LOW = ("data", "models", "runtimes", "postprocess", "serve", "artifacts")
HIGH = ("export", "calibration", "benchmarks", "cli")


def module_files(package_dirs: dict[str, Path]) -> dict[str, Path]:
    """Every module's dotted name -> its file."""
    found: dict[str, Path] = {}
    for package, folder in package_dirs.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def imports_of(name: str, path: Path, modules: Iterable[str] = ()) -> set[str]:
    """The dotted names ``path`` imports (relative imports resolved), lazy ones inside functions included.

    ``from pkg import sub`` counts as an import of the submodule ``pkg.sub`` when ``sub`` is one of ``modules``
    (not of ``pkg``'s ``__init__``), else of ``pkg``."""
    known = set(modules)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            subs = {f"{module}.{alias.name}" for alias in node.names} & known
            out.update(subs)
            if len(subs) < len(node.names):
                out.add(module)
    return out


def graph(package_dirs: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    files = module_files(package_dirs)
    return {
        name: {t for t in imports_of(name, path, files) if t in files and t != name} for name, path in files.items()
    }


def area(module: str) -> str:
    """``edge_ad.<first part>``: a subpackage, or a root module on its own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    low = tuple(f"edge_ad.{p}" for p in LOW)
    high = tuple(f"edge_ad.{p}" for p in HIGH)
    return sorted(
        f"{src} imports {dst}"
        for src, targets in edges.items()
        if area(src) in low
        for dst in targets
        if area(dst) in high
    )


def module_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each one cycle's members."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                members.append(top)
                if top == node:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def mutual_packages(edges: dict[str, set[str]]) -> list[str]:
    pairs = {(area(src), area(dst)) for src, targets in edges.items() for dst in targets if area(src) != area(dst)}
    return sorted(f"{a} <-> {b}" for a, b in pairs if (b, a) in pairs and a < b)


def problems(package_dirs: dict[str, Path]) -> list[str]:
    edges = graph(package_dirs)
    cycles = [" -> ".join(c) for c in module_cycles(edges)]
    packages = [f"packages: {p}" for p in mutual_packages(edges)]
    return layer_violations(edges) + [f"cycle: {c}" for c in cycles] + packages


def test_the_project_keeps_its_layers() -> None:
    edges = graph(PACKAGE_DIRS)
    assert len(edges) > 100 and edges["edge_ad.detector"], "the tree was not read"
    assert problems(PACKAGE_DIRS) == []


def _tree(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"edge_ad": root / "edge_ad", "edge_ad.export": root / "export"}


def _base() -> dict[str, str]:
    return {
        "edge_ad/__init__.py": "",
        "edge_ad/runtimes/__init__.py": "",
        "edge_ad/runtimes/onnx_runtime.py": "from edge_ad.artifacts import INPUT_NAME\n",
        "edge_ad/artifacts.py": "INPUT_NAME = 'images'\n",
        "export/__init__.py": "",
        "export/onnx_export.py": "from edge_ad.runtimes import onnx_runtime\n",
    }


def _problems_with(tmp_path: Path, extra: dict[str, str]) -> list[str]:
    return problems(_tree(tmp_path, {**_base(), **extra}))


def test_a_clean_synthetic_tree_passes(tmp_path: Path) -> None:
    assert _problems_with(tmp_path, {}) == []


def test_a_runtime_that_imports_export_fails_even_inside_a_function(tmp_path: Path) -> None:
    lazy = "def f():\n    from edge_ad.export import onnx_export\n"
    found = _problems_with(tmp_path, {"edge_ad/runtimes/tensorrt_runtime.py": lazy})
    assert "edge_ad.runtimes.tensorrt_runtime imports edge_ad.export.onnx_export" in found


def test_a_relative_import_of_the_cli_from_serve_fails(tmp_path: Path) -> None:
    extra = {"edge_ad/serve/__init__.py": "", "edge_ad/serve/app.py": "from ..cli import main\n",
             "edge_ad/cli/__init__.py": "", "edge_ad/cli/main.py": ""}
    assert "edge_ad.serve.app imports edge_ad.cli.main" in _problems_with(tmp_path, extra)


def test_an_import_cycle_fails(tmp_path: Path) -> None:
    extra = {"edge_ad/bundle.py": "def f():\n    from edge_ad.export.onnx_export import x\n",
             "export/onnx_export.py": "from edge_ad.bundle import f\n"}
    found = _problems_with(tmp_path, extra)
    assert "cycle: edge_ad.bundle -> edge_ad.export.onnx_export" in found
    assert "packages: edge_ad.bundle <-> edge_ad.export" in found


def test_two_packages_importing_each_other_fail_without_a_module_cycle(tmp_path: Path) -> None:
    extra = {"edge_ad/thresholds/__init__.py": "", "edge_ad/thresholds/a.py": "from edge_ad.models import b\n",
             "edge_ad/models/__init__.py": "", "edge_ad/models/b.py": "",
             "edge_ad/models/c.py": "from edge_ad.thresholds import d\n", "edge_ad/thresholds/d.py": ""}
    found = _problems_with(tmp_path, extra)
    assert found == ["packages: edge_ad.models <-> edge_ad.thresholds"]



def test_the_inference_path_loads_no_torch_and_no_higher_layer() -> None:
    """The same rule at run time (:func:`tests.layering.assert_runs_without`): importing what runs an exported model
    loads neither torch nor export, calibration, benchmarks or the CLI."""
    from tests.layering import assert_runs_without

    code = (
        "import edge_ad.detector, edge_ad.artifacts, edge_ad.evaluation.evaluate, edge_ad.models.families\n"
        "import edge_ad.runtimes.onnx_runtime, edge_ad.runtimes.tensorrt_runtime, edge_ad.runtimes.triton_runtime\n"
        "import edge_ad.runtimes.scoring, edge_ad.serve.service, edge_ad.serve.worker\n"
    )
    forbidden = ["torch", "edge_ad.export", "edge_ad.calibration", "edge_ad.benchmarks", "edge_ad.cli"]
    assert_runs_without(code, forbidden)
