"""Helpers for tests that need real plugin distributions (entry points of ``mmvq.adapters``).

``importlib.metadata`` discovers ``<name>-<version>.dist-info`` folders on ``sys.path``; a folder
holding ``METADATA`` and ``entry_points.txt`` is what ``pip install`` leaves in site-packages, so
these helpers build real installed-distribution metadata, not mocks:

* :func:`make_plugin_dist` writes a tiny distribution (metadata + modules) into a folder;
* :data:`VECTOR_PLUGIN_DIR` is a checked-in one that provides ``vector`` (the adapter in
  ``tests/plugins/vector_adapter.py``);
* :func:`plugin_path` puts such folders on ``sys.path`` in this process (and refreshes the
  registry), :func:`subprocess_env` / :func:`run_python` do it for a child interpreter.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
VECTOR_PLUGIN_DIR = TESTS_DIR / "fixtures" / "vector_plugin"
"""Site folder of the fixture distribution ``mmvq-vector-plugin 0.1`` (entry point ``vector``)."""
VECTOR_DIST_NAME = "mmvq-vector-plugin"
VECTOR_DIST_VERSION = "0.1"

__all__ = [
    "TESTS_DIR",
    "VECTOR_DIST_NAME",
    "VECTOR_DIST_VERSION",
    "VECTOR_PLUGIN_DIR",
    "make_plugin_dist",
    "plugin_path",
    "run_python",
    "subprocess_env",
]


def make_plugin_dist(
    site: Path,
    name: str,
    entry_points: Mapping[str, str],
    modules: Mapping[str, str],
    *,
    version: str = "0.1",
    group: str = "mmvq.adapters",
) -> Path:
    """Write an installed-looking distribution into the folder ``site`` and return ``site``.

    Args:
        site: a folder to put on ``sys.path`` (created; several distributions may share it).
        name: the distribution name, e.g. ``"mmvq-plugin-demo"``.
        entry_points: adapter name -> ``"module:attr"`` in ``group``.
        modules: dotted module name -> source (dedented); parent packages get an empty
            ``__init__.py``.
        version: the distribution version.
        group: the entry-point group.
    """
    site = Path(site)
    site.mkdir(parents=True, exist_ok=True)
    normalized = re.sub(r"[-_.]+", "_", name)
    info = site / f"{normalized}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = [f"[{group}]"] + [f"{key} = {value}" for key, value in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in modules.items():
        parts = module.split(".")
        folder = site
        for package in parts[:-1]:
            folder = folder / package
            folder.mkdir(exist_ok=True)
            init = folder / "__init__.py"
            if not init.exists():
                init.write_text("")
        (folder / f"{parts[-1]}.py").write_text(textwrap.dedent(source))
    importlib.invalidate_caches()
    return site


@contextlib.contextmanager
def plugin_path(*sites: Path) -> Iterator[None]:
    """Make the distributions in ``sites`` (and ``tests/``) visible in this process.

    Prepends them to ``sys.path`` and re-reads entry points in mmvq's default registry; on exit
    restores ``sys.path``, forgets modules imported from ``sites`` and re-reads entry points again.
    """
    from mmvq.registry import refresh_entry_points

    saved = list(sys.path)
    folders = [str(Path(s).resolve()) for s in sites]
    sys.path[:0] = folders + ([str(TESTS_DIR)] if str(TESTS_DIR) not in sys.path else [])
    importlib.invalidate_caches()
    refresh_entry_points()
    try:
        yield
    finally:
        sys.path[:] = saved
        for mod_name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None) or ""
            if any(file.startswith(folder + os.sep) for folder in folders):
                del sys.modules[mod_name]
        importlib.invalidate_caches()
        refresh_entry_points()


def subprocess_env(*sites: Path, **extra: str) -> dict[str, str]:
    """The environment for a child Python that sees ``sites`` and ``tests/`` on its path.

    ``MMVQ_DISABLE_PLUGIN_AUTOLOAD`` is removed unless given in ``extra``; one thread per child.
    """
    env = dict(os.environ)
    env.pop("MMVQ_DISABLE_PLUGIN_AUTOLOAD", None)
    paths = [str(Path(s).resolve()) for s in sites] + [str(TESTS_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def run_python(
    code: str,
    *sites: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a fresh interpreter that sees ``sites``; capture its output.

    ``env`` defaults to :func:`subprocess_env` of ``sites``; ``cwd`` to ``tests/``.
    """
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        env=dict(env) if env is not None else subprocess_env(*sites),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(cwd if cwd is not None else TESTS_DIR),
    )
