"""The rules of the codebase's layout, as functions over source text (used by test_layout.py on
the real tree and on small synthetic sources, so that each rule is seen to fail).

* :func:`import_edges` / :func:`find_cycles`: the imports among a package's modules (every
  ``import`` statement, in functions too, except under ``if TYPE_CHECKING:``) and their cycles.
* :func:`modality_names`: where code names a built-in modality (``image``, ``text``, ``audio``)
  in a string literal or an identifier it binds; docstrings and comments are prose and are not
  code.
* :func:`oversized`: modules over a line budget and functions over a line budget.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "BUILTIN_MODALITIES",
    "find_cycles",
    "import_edges",
    "imported_modules",
    "modality_names",
    "module_name",
    "oversized",
]

BUILTIN_MODALITIES = frozenset({"image", "text", "audio"})


def module_name(path: Path, root: Path) -> str:
    """``root/mmvq/data/config.py`` -> ``mmvq.data.config`` (``__init__`` -> the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks (annotations only, not run)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skipped.update(id(n) for n in ast.walk(child))
    return skipped


def imported_modules(source: str, module: str, is_package: bool = False) -> list[list[str]]:
    """For every import statement of ``source`` (the module ``module``), the names it may mean,
    most specific first: ``import a.b`` -> ``[a.b]``; ``from a import b`` -> ``[a.b, a]`` (a
    submodule ``b``, else a name in ``a``). Relative imports are resolved."""
    tree = ast.parse(source)
    skipped = _type_checking_nodes(tree)
    package = module if is_package else module.rpartition(".")[0]
    found: list[list[str]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [[alias.name] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found += [[f"{base}.{alias.name}", base] for alias in node.names]
    return found


def import_edges(sources: Mapping[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """``{module: {modules of the same tree it imports}}`` for ``{module: (source,
    is_package)}``. Each import counts once, as the most specific module of the tree it names
    (``from a import b``: ``a.b`` when that is a module, else ``a``; ``import a.b.c`` where only
    ``a.b`` is a module: ``a.b``)."""
    edges: dict[str, set[str]] = {m: set() for m in sources}
    for module, (source, is_package) in sources.items():
        for candidates in imported_modules(source, module, is_package):
            target = next((c for c in candidates if c in sources), None)
            name = candidates[-1]
            while target is None and name:
                name = name.rpartition(".")[0]
                target = name if name in sources else None
            if target is not None and target != module:
                edges[module].add(target)
    return edges


def find_cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return cycles


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                ids.add(id(first.value))
        # an attribute's docstring: a bare string right after an assignment
        for stmt_list in (getattr(node, "body", None), getattr(node, "orelse", None)):
            if not isinstance(stmt_list, list):
                continue
            for prev, stmt in zip(stmt_list, stmt_list[1:]):
                if (
                    isinstance(prev, (ast.Assign, ast.AnnAssign))
                    and isinstance(stmt, ast.Expr)
                    and isinstance(stmt.value, ast.Constant)
                    and isinstance(stmt.value.value, str)
                ):
                    ids.add(id(stmt.value))
    return ids


_KEY_CHARS = set("'\"=<>,/_{}[]-")


def _identifier_words(name: str, allowed: Iterable[str]) -> set[str]:
    """The lowercase words of an identifier (split at ``_`` and camelCase), once the ``allowed``
    names are taken out."""
    for phrase in allowed:
        name = name.replace(phrase, "_")
    return {w.lower() for w in re.findall(r"[A-Z][a-z]+|[a-z]+", name)}


def _names_in_string(value: str, wanted: Iterable[str], allowed: Iterable[str]) -> set[str]:
    """The modality names a string literal uses as a name: the whole string, or a word that
    touches key syntax (quotes, ``=``, ``->``, ``,``, ``/``, ``_``, ``-``, brackets), as in
    ``"image"``, ``"text=caption"``, ``"text->image"``, ``"--audio x.wav"``, ``"usage/image"``.
    Prose ("an image file") is not naming."""
    for phrase in allowed:
        value = value.replace(phrase, " ")
    found = set()
    for word in wanted:
        if value.strip() == word:
            found.add(word)
            continue
        for match in re.finditer(rf"(?<![A-Za-z]){word}(?![A-Za-z])", value):
            before = value[match.start() - 1] if match.start() > 0 else ""
            after = value[match.end()] if match.end() < len(value) else ""
            if before in _KEY_CHARS or after in _KEY_CHARS:
                found.add(word)
    return found


def _bound_names(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, name)`` of every name the code binds: definitions, arguments, assignment
    targets (names and attributes), keyword arguments, import aliases."""
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append((node.lineno, node.name))
        elif isinstance(node, ast.arg):
            names.append((node.lineno, node.arg))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.append((node.lineno, node.attr))
        elif isinstance(node, ast.keyword) and node.arg is not None:
            names.append((node.lineno, node.arg))
        elif isinstance(node, ast.alias) and node.asname:
            names.append((node.lineno, node.asname))
    return names


def modality_names(
    source: str, modalities: Iterable[str] = BUILTIN_MODALITIES, allowed: Iterable[str] = ()
) -> list[str]:
    """``"<line>: <what>"`` for every string literal (not a docstring) and every bound name in
    ``source`` that has a built-in modality's name as a word (``"image"``, ``image_column``,
    ``"text->image"``, ``ImageAdapter``), once the ``allowed`` phrases are taken out."""
    wanted = set(modalities)
    allowed = sorted(allowed, key=len, reverse=True)  # longest first: "sample_image_name"
    tree = ast.parse(source)
    docstrings = _docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and _names_in_string(node.value, wanted, allowed)
        ):
            found.append(f"{node.lineno}: string {node.value!r:.60}")
    for line, name in _bound_names(tree):
        if _identifier_words(name, allowed) & wanted:
            found.append(f"{line}: name {name!r}")
    return sorted(set(found), key=lambda f: int(f.split(":")[0]))


def oversized(source: str, max_module_lines: int, max_function_lines: int) -> list[str]:
    """The module (when longer than ``max_module_lines``) and every function or method longer
    than ``max_function_lines`` (decorators and docstring included)."""
    problems = []
    lines = source.count("\n") + (0 if source.endswith("\n") else 1)
    if lines > max_module_lines:
        problems.append(f"module: {lines} lines > {max_module_lines}")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            length = node.end_lineno - start + 1
            if length > max_function_lines:
                problems.append(
                    f"{node.name} (line {start}): {length} lines > {max_function_lines}"
                )
    return problems
