"""Tests of mmvq.registry: names, duplicates, errors, real entry points (dist-info on sys.path)."""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
from plugin_utils import (
    VECTOR_DIST_NAME,
    VECTOR_DIST_VERSION,
    VECTOR_PLUGIN_DIR,
    make_plugin_dist,
    run_python,
)
from plugins.vector_adapter import VectorAdapter
from torch import nn

import mmvq
from mmvq.adapter import ModalityAdapter
from mmvq.registry import (
    DISABLE_AUTOLOAD_ENV,
    REGISTERED_IN_CODE,
    AdapterPluginError,
    AdapterRegistry,
    AdapterRegistryError,
    DuplicateAdapterError,
    InvalidAdapterError,
    UnknownAdapterError,
    adapter_info,
    adapter_name,
    get_adapter,
    list_adapters,
    register_adapter,
    unregister_adapter,
)

torch.set_num_threads(1)

DEMO_MODULE = """
    from plugins.vector_adapter import VectorAdapter

    class DemoAdapter(VectorAdapter):
        '''The demo plugin's adapter.'''

    NOT_AN_ADAPTER = {"this": "is a dict"}
"""
BROKEN_MODULE = """
    raise ImportError("mmvq_plugin_broken needs the package 'frobnicate' (pip install frobnicate)")
"""


class OtherVector(VectorAdapter):
    """A second concrete adapter class (registered only by the global-API test)."""


def _fresh(name: str = "Fresh") -> type[VectorAdapter]:
    """A throwaway concrete adapter class, so registrations never rename a shared class."""
    return type(name, (VectorAdapter,), {"__module__": __name__})


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder on sys.path for fixture distributions; modules imported from it are forgotten."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "") or "").startswith(str(folder)):
            del sys.modules[name]


def _demo_dists(site: Path, tag: str) -> tuple[str, str]:
    """A working and a broken plugin distribution with module names unique to ``tag``."""
    demo, broken = f"mmvq_plugin_demo_{tag}", f"mmvq_plugin_broken_{tag}"
    make_plugin_dist(
        site,
        "mmvq-plugin-demo",
        {"demo": f"{demo}:DemoAdapter", "notadapter": f"{demo}:NOT_AN_ADAPTER"},
        {demo: DEMO_MODULE},
    )
    make_plugin_dist(
        site,
        "mmvq-plugin-broken",
        {"broken": f"{broken}:BrokenAdapter"},
        {broken: BROKEN_MODULE},
        version="2.3",
    )
    return demo, broken


# ---------------------------------------------------------------- code registration
def test_decorator_and_call_register_and_set_registered_name() -> None:
    try:

        @register_adapter("test-deco-vec")
        class DecoVector(VectorAdapter):
            pass

        assert DecoVector.registered_name == "test-deco-vec"
        assert get_adapter("test-deco-vec") is DecoVector
        assert mmvq.get_adapter("test-deco-vec") is DecoVector  # the lazy top-level export

        returned = register_adapter("test-call-vec", OtherVector)
        assert returned is OtherVector and OtherVector.registered_name == "test-call-vec"
        assert list_adapters("test-*-vec") == ["test-call-vec", "test-deco-vec"]
        info = adapter_info("test-call-vec")
        assert (info.name, info.cls, info.source) == (
            "test-call-vec",
            OtherVector,
            REGISTERED_IN_CODE,
        )
        assert info.distribution is None and info.version is None  # defined in a test module
        assert adapter_name(OtherVector(code_dim=8)) == "test-call-vec"
    finally:
        unregister_adapter("test-deco-vec")
        unregister_adapter("test-call-vec")
    assert "test-call-vec" not in list_adapters() and OtherVector.registered_name is None


def test_duplicate_name_is_refused_naming_both_classes_unless_exist_ok() -> None:
    reg = AdapterRegistry(autoload=False)
    first, second = _fresh("FirstVector"), _fresh("SecondVector")
    reg.register("vec", first)
    reg.register("vec", first)  # the same class again is not a conflict
    with pytest.raises(DuplicateAdapterError) as err:
        reg.register("vec", second)
    message = str(err.value)
    assert "test_registry.FirstVector" in message and "test_registry.SecondVector" in message
    assert "exist_ok=True" in message
    assert reg.get("vec") is first
    reg.register("vec", second, exist_ok=True)
    assert reg.get("vec") is second and second.registered_name == "vec"


@pytest.mark.parametrize(
    ("name", "error", "fragment"),
    [
        ("", ValueError, "non-empty"),
        ("Vector", ValueError, "such as 'vector'"),
        ("my adapter", ValueError, "such as 'my_adapter'"),
        ("os:system", ValueError, "looks like an import path"),
        ("pkg.module.Adapter", ValueError, "never imports by path"),
        (3, TypeError, "must be a str"),
    ],
)
def test_invalid_names_are_refused_with_the_fix(name: object, error: type, fragment: str) -> None:
    reg = AdapterRegistry(autoload=False)
    with pytest.raises(error, match=fragment):
        reg.register(name, _fresh())  # type: ignore[arg-type]
    with pytest.raises(error, match=fragment):
        reg.get(name)  # type: ignore[arg-type]


class _Abstract(ModalityAdapter):
    def num_tokens(self) -> int:
        return 1


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        (dict, "must be a subclass of mmvq.ModalityAdapter, got <class 'dict'>"),
        (nn.Linear, "must be a subclass of mmvq.ModalityAdapter"),
        (VectorAdapter(), "an instance of VectorAdapter, not the class"),
        (
            _Abstract,
            "is abstract (missing: decode, encode, postprocess, preprocess, reconstruction_loss)",
        ),
    ],
)
def test_non_adapters_are_refused(obj: object, fragment: str) -> None:
    reg = AdapterRegistry(autoload=False)
    with pytest.raises(InvalidAdapterError) as err:
        reg.register("thing", obj)  # type: ignore[arg-type]
    assert fragment in str(err.value)
    assert isinstance(err.value, TypeError)
    assert reg.names() == []


def test_unknown_name_lists_names_and_closest_match() -> None:
    reg = AdapterRegistry(autoload=False)
    reg.register("vector", _fresh())
    reg.register("vector-other", _fresh())
    with pytest.raises(KeyError) as err:
        reg.get("vectr")
    exc = err.value
    assert isinstance(exc, UnknownAdapterError)
    message = str(exc)
    assert message.startswith("unknown adapter 'vectr'")  # readable, not KeyError's repr
    assert "Did you mean 'vector'?" in message
    assert "Registered adapters: vector, vector-other." in message
    assert exc.suggestion == "vector" and exc.known == ["vector", "vector-other"]

    with pytest.raises(UnknownAdapterError) as err:
        reg.get("zzz", distribution_hint="mmvq-zzz")
    assert "pip install mmvq-zzz" in str(err.value) and "Did you mean" not in str(err.value)


def test_unknown_name_with_autoload_on_points_at_the_entry_point_group() -> None:
    reg = AdapterRegistry(group="mmvq.test-group-nobody-declares", autoload=True)
    with pytest.raises(UnknownAdapterError) as err:
        reg.get("image")
    message = str(err.value)
    assert "Registered adapters: (none)." in message
    assert "'mmvq.test-group-nobody-declares' entry-point group" in message
    assert "mmvq.register_adapter('image', YourAdapter)" in message


def test_list_pattern_filters_with_fnmatch() -> None:
    reg = AdapterRegistry(autoload=False)
    for name in ("image", "image-hq", "text", "audio"):
        reg.register(name, _fresh())
    assert reg.names() == ["audio", "image", "image-hq", "text"]
    assert reg.names("image*") == ["image", "image-hq"]
    assert reg.names("?ext") == ["text"]
    assert reg.names("video*") == []
    with pytest.raises(TypeError, match="fnmatch pattern"):
        reg.names(3)  # type: ignore[arg-type]


def test_adapter_name_refuses_an_unregistered_subclass() -> None:
    reg = AdapterRegistry(autoload=False)
    base = reg.register("vector", _fresh("Base"))

    class Sub(base):  # type: ignore[valid-type,misc]  # inherits registered_name, is not "vector"
        pass

    assert Sub.registered_name == "vector" and reg.name_of(base) == "vector"
    with pytest.raises(AdapterRegistryError, match="Sub is not registered"):
        reg.name_of(Sub)
    with pytest.raises(InvalidAdapterError):
        reg.name_of(nn.Linear(2, 2))  # type: ignore[arg-type]


# --------------------------------------------------------------------- entry points
def test_entry_points_load_on_demand_and_a_broken_one_is_isolated(site: Path) -> None:
    demo, broken = _demo_dists(site, "inproc")
    reg = AdapterRegistry()
    assert {"demo", "broken", "notadapter"} <= set(reg.names())
    assert demo not in sys.modules  # listing names imports nothing

    with pytest.raises(AdapterPluginError) as err:
        reg.get("broken")
    exc = err.value
    message = str(exc)
    assert f"broken = {broken}:BrokenAdapter" in message
    assert "distribution mmvq-plugin-broken 2.3" in message
    assert "needs the package 'frobnicate'" in message
    assert isinstance(exc.__cause__, ImportError)
    assert (exc.name, exc.distribution, exc.version) == ("broken", "mmvq-plugin-broken", "2.3")

    cls = reg.get("demo")  # the other plugin still works
    assert cls.__name__ == "DemoAdapter" and cls.registered_name == "demo"
    info = reg.info("demo")
    assert (info.distribution, info.version, info.source) == (
        "mmvq-plugin-demo",
        "0.1",
        f"{demo}:DemoAdapter",
    )

    with pytest.raises(AdapterPluginError) as again:  # the failure is remembered, same message
        reg.get("broken")
    assert str(again.value) == message and isinstance(again.value.__cause__, ImportError)

    with pytest.raises(AdapterPluginError) as err:
        reg.get("notadapter")
    assert f"notadapter = {demo}:NOT_AN_ADAPTER" in str(err.value)
    assert "mmvq-plugin-demo 0.1" in str(err.value)
    assert "must be a subclass of mmvq.ModalityAdapter" in str(err.value)
    assert isinstance(err.value.__cause__, InvalidAdapterError)

    rows = {row.name: row for row in reg.infos("[bd]*")}  # broken, demo (skip the built-ins)
    assert rows["demo"].ok and rows["demo"].cls is cls
    assert not rows["broken"].ok and "frobnicate" in (rows["broken"].error or "")
    assert rows["broken"].distribution == "mmvq-plugin-broken"


def test_code_registration_wins_over_an_entry_point_and_warns(site: Path) -> None:
    demo, _ = _demo_dists(site, "shadow")
    reg = AdapterRegistry()
    mine = reg.register("demo", _fresh("MyDemo"))
    with pytest.warns(UserWarning, match=rf"shadows entry point demo = {demo}:DemoAdapter"):
        assert reg.get("demo") is mine
    assert demo not in sys.modules  # the shadowed entry point is never imported
    info = reg.info("demo")
    assert info.source == REGISTERED_IN_CODE
    assert info.shadows == (f"demo = {demo}:DemoAdapter (distribution mmvq-plugin-demo 0.1)",)


def test_registering_the_entry_points_own_class_keeps_its_provenance(site: Path) -> None:
    demo, _ = _demo_dists(site, "own")
    reg = AdapterRegistry()
    module = importlib.import_module(demo)  # a user imports the plugin and registers its class
    reg.register("demo", module.DemoAdapter)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no shadowing warning: it is the same adapter
        assert reg.get("demo") is module.DemoAdapter
    info = reg.info("demo")
    assert (info.distribution, info.source, info.shadows) == (
        "mmvq-plugin-demo",
        f"{demo}:DemoAdapter",
        (),
    )


def test_adapter_name_finds_an_entry_point_class_imported_directly(site: Path) -> None:
    demo, _ = _demo_dists(site, "direct")
    reg = AdapterRegistry()
    module = importlib.import_module(demo)  # imported and built without any registry lookup
    assert module.DemoAdapter.__dict__.get("registered_name") is None
    assert reg.name_of(module.DemoAdapter(code_dim=8)) == "demo"
    assert reg.info("demo").distribution == "mmvq-plugin-demo"


def test_two_distributions_declaring_one_name_are_reported(site: Path) -> None:
    make_plugin_dist(
        site, "mmvq-vec-a", {"vec": "mmvq_vec_a:DemoAdapter"}, {"mmvq_vec_a": DEMO_MODULE}
    )
    make_plugin_dist(
        site, "mmvq-vec-b", {"vec": "mmvq_vec_b:DemoAdapter"}, {"mmvq_vec_b": DEMO_MODULE}
    )
    reg = AdapterRegistry()
    with pytest.raises(AdapterPluginError) as err:
        reg.get("vec")
    message = str(err.value)
    assert "declared by 2 entry points" in message
    assert "mmvq-vec-a" in message and "mmvq-vec-b" in message
    assert "mmvq_vec_a" not in sys.modules and "mmvq_vec_b" not in sys.modules
    chosen = reg.register("vec", _fresh("Chosen"))  # choosing in code resolves it
    with pytest.warns(UserWarning, match="shadows entry point vec = mmvq_vec_a:DemoAdapter"):
        assert reg.get("vec") is chosen


def test_an_entry_point_with_an_invalid_name_is_listed_as_broken(site: Path) -> None:
    make_plugin_dist(site, "mmvq-badname", {"Bad.Name": "plugins.vector_adapter:VectorAdapter"}, {})
    reg = AdapterRegistry()
    assert "Bad.Name" not in reg.names()
    (row,) = reg.infos("Bad*")
    assert row.cls is None and row.distribution == "mmvq-badname"
    assert "entry point name 'Bad.Name' looks like an import path" in (row.error or "")


def test_env_var_disables_autoload(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(VECTOR_PLUGIN_DIR))
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    reg = AdapterRegistry()
    assert "vector" not in reg.names()
    with pytest.raises(UnknownAdapterError) as err:
        reg.get("vector")
    message = str(err.value)
    assert f"{DISABLE_AUTOLOAD_ENV} is set" in message
    assert "vector = plugins.vector_adapter:VectorAdapter" in message
    assert f"{VECTOR_DIST_NAME} {VECTOR_DIST_VERSION}" in message
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "0")
    assert reg.get("vector") is VectorAdapter
    info = reg.info("vector")
    assert (info.distribution, info.version) == (VECTOR_DIST_NAME, VECTOR_DIST_VERSION)


def test_refresh_entry_points_sees_a_plugin_installed_later(site: Path) -> None:
    reg = AdapterRegistry()
    assert "late" not in reg.names()
    make_plugin_dist(
        site, "mmvq-late", {"late": "mmvq_late:DemoAdapter"}, {"mmvq_late": DEMO_MODULE}
    )
    assert "late" not in reg.names()  # discovery is cached
    reg.refresh_entry_points()
    assert reg.get("late").__module__ == "mmvq_late"


# ------------------------------------------------------------- fresh interpreters
def test_import_mmvq_does_not_touch_entry_points(tmp_path: Path) -> None:
    site = tmp_path / "site"
    demo, broken = _demo_dists(site, "lazy")
    result = run_python(
        f"""
        import json, sys
        import importlib.metadata as md
        calls = []
        real = md.entry_points
        def spy(*args, **kwargs):
            # torch reads its own groups (e.g. torch.backends); record ours and unfiltered reads.
            if kwargs.get("group") in (None, "mmvq.adapters"):
                calls.append(kwargs.get("group"))
            return real(*args, **kwargs)
        md.entry_points = spy
        import mmvq, mmvq.registry
        from mmvq import register_adapter, ModalityAdapter
        from plugins.vector_adapter import VectorAdapter
        register_adapter("in-code", VectorAdapter)
        after_import = list(calls)
        names = mmvq.list_adapters()
        after_list = list(calls)
        demo_after_list = {demo!r} in sys.modules
        mmvq.get_adapter("demo")
        print(json.dumps(dict(
            after_import=after_import, after_list=after_list, names=names,
            demo_after_list=demo_after_list, demo_after_get={demo!r} in sys.modules,
            broken_imported={broken!r} in sys.modules)))
        """,
        site,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["after_import"] == []  # import + code registration read no metadata
    assert out["after_list"] == ["mmvq.adapters"]  # read once, on the first lookup
    assert {"in-code", "demo", "broken"} <= set(out["names"])
    assert out["demo_after_list"] is False and out["demo_after_get"] is True
    assert out["broken_imported"] is False  # plugins load one by one, on demand


def test_real_entry_points_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """The global API with a broken plugin installed: its name errors, everything else works."""
    site = tmp_path / "site"
    _, broken = _demo_dists(site, "global")
    result = run_python(
        """
        import json
        import mmvq
        from mmvq.registry import AdapterPluginError
        out = {}
        try:
            mmvq.get_adapter("broken")
        except AdapterPluginError as exc:
            out["broken"] = [str(exc), type(exc.__cause__).__name__]
        vector = mmvq.get_adapter("vector")
        info = mmvq.adapter_info("vector")
        out["vector"] = [vector.__name__, info.distribution, info.version, info.source]
        out["demo"] = mmvq.get_adapter("demo").__name__
        print(json.dumps(out))
        """,
        site,
        VECTOR_PLUGIN_DIR,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    message, cause = out["broken"]
    assert f"broken = {broken}:BrokenAdapter" in message and "mmvq-plugin-broken 2.3" in message
    assert cause == "ImportError"
    assert out["vector"] == [
        "VectorAdapter",
        VECTOR_DIST_NAME,
        VECTOR_DIST_VERSION,
        "plugins.vector_adapter:VectorAdapter",
    ]
    assert out["demo"] == "DemoAdapter"
