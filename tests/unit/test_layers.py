"""The package's folders are its layers: no import runs in a circle, between modules or between folders.

`make lint` checks the order of the layers (import-linter, pyproject.toml); these tests check that no
import, at the top of a file or inside a function, closes a circle, and that the check finds one.
"""

import grimp
import pytest
from helpers import REPO


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                group.append(other)
                if other == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def imports() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in the file (grimp reads every import statement)."""
    graph = grimp.build_graph("mnist_tf")
    return {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}


def folder(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_module_imports_itself_in_a_circle(imports):
    assert cycles(imports) == []


def test_no_folder_imports_itself_in_a_circle(imports):
    folders: dict[str, set[str]] = {}
    for module, targets in imports.items():
        folders.setdefault(folder(module), set()).update(folder(t) for t in targets if folder(t) != folder(module))
    assert cycles(folders) == []


def test_the_circle_check_finds_circles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_folder_is_a_package_with_a_docstring():
    for path in sorted((REPO / "mnist_tf").iterdir()):
        if path.is_dir() and path.name not in ("__pycache__", "static"):
            init = path / "__init__.py"
            assert init.is_file(), f"{path.name}/ has no __init__.py"
            assert init.read_text().lstrip().startswith('"""'), f"{path.name}/__init__.py says nothing of its layer"
