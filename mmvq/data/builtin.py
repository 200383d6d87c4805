"""Built-in datasets: data mmvq generates itself (``DataConfig(builtin="shapes")``).

A built-in dataset is a :class:`BuiltinDataset`: it builds ``train``/``validation`` splits, says
which options it takes (a dataclass, ``options_class``; the recipes give each field a
``--builtin_<field>`` flag) and which translation scorers suit it. Datasets are found by name
through the ``mmvq.datasets`` entry-point group, exactly as adapters are through
``mmvq.adapters``; mmvq's own "shapes" data comes from the ``mmvq_adapters`` distribution::

    [project.entry-points."mmvq.datasets"]
    shapes = "mmvq_adapters.shapes:ShapesDataset"

The entry point names a :class:`BuiltinDataset` subclass (instantiated without arguments) or an
instance. :func:`register_builtin_dataset` registers one in code (it wins over an entry point of
the same name). Entry points are read lazily and imported only when their name is requested.
"""

from __future__ import annotations

import dataclasses
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

from mmvq.utils.configs import check_known_fields

if TYPE_CHECKING:  # pragma: no cover
    import datasets

__all__ = [
    "ENTRY_POINT_GROUP",
    "BuiltinDataset",
    "Scorer",
    "BuiltinDatasetError",
    "builtin_dataset_names",
    "get_builtin_dataset",
    "register_builtin_dataset",
    "unregister_builtin_dataset",
]

ENTRY_POINT_GROUP = "mmvq.datasets"
"""The entry-point group through which installed distributions provide built-in datasets."""

Scorer = Callable[[list[Any], list[Any]], "float | Mapping[str, float]"]
"""``scorer(generated, sources) -> float | {name: float}``: scores translations into a modality
from the raw source values of the same examples (see :mod:`mmvq.training.evaluate`)."""


class BuiltinDatasetError(ValueError):
    """A built-in dataset name is unknown, or its entry point cannot provide the dataset."""


@dataclasses.dataclass
class NoOptions:
    """The options of a built-in dataset that takes none."""


class BuiltinDataset(ABC):
    """A dataset mmvq can generate itself, selected by ``DataConfig.builtin``.

    Attributes:
        options_class: a dataclass of the dataset's own options (``DataConfig.builtin_options``;
            the recipes' ``--builtin_<field>`` flags). Fields need defaults.
        modalities: the modalities its columns feed by default (the recipes' default
            ``--modalities``).
    """

    options_class: ClassVar[type] = NoOptions
    modalities: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def build(
        self, *, num_train: int, num_eval: int, seed: int, modalities: Sequence[str], options: Any
    ) -> datasets.DatasetDict:
        """The splits ``"train"`` and ``"validation"`` (``num_eval`` rows, possibly 0).

        Args:
            num_train, num_eval: rows of each split.
            seed: the same seed must give the same data.
            modalities: the modalities the data is loaded for (a dataset may leave out columns
                nobody reads).
            options: an ``options_class`` instance.
        """

    def options(self, values: Mapping[str, Any]) -> Any:
        """``options_class(**values)``, with a clear error for an unknown option."""
        check_known_fields(self.options_class, values, f"{type(self).__name__} options", "option")
        return self.options_class(**values)

    def translation_scorers(self, column_map: Mapping[str, str]) -> dict[str, Scorer]:
        """Scorers of translations that suit this data (``{"<source>-><target>": scorer}``, see
        :func:`mmvq.training.evaluate.evaluate`) when read through ``column_map``."""
        return {}


_REGISTERED: dict[str, BuiltinDataset] = {}
_LOADED: dict[str, BuiltinDataset] = {}


def register_builtin_dataset(name: str, dataset: BuiltinDataset | type[BuiltinDataset]) -> None:
    """Make ``dataset`` (an instance or a class) the built-in dataset ``name``."""
    _REGISTERED[name] = _instance(dataset, f"register_builtin_dataset({name!r}, ...)")


def unregister_builtin_dataset(name: str) -> None:
    """Forget a dataset registered in code (entry points are not affected)."""
    _REGISTERED.pop(name, None)


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def builtin_dataset_names() -> list[str]:
    """Sorted names of the built-in datasets (registered in code or declared by entry points;
    nothing is imported)."""
    return sorted(set(_REGISTERED) | set(_entry_points()))


def _instance(obj: Any, where: str) -> BuiltinDataset:
    if inspect.isclass(obj) and issubclass(obj, BuiltinDataset):
        obj = obj()
    if not isinstance(obj, BuiltinDataset):
        raise BuiltinDatasetError(
            f"{where} must be a mmvq.data.builtin.BuiltinDataset subclass or instance, got "
            f"{obj!r:.80}"
        )
    return obj


def get_builtin_dataset(name: str) -> BuiltinDataset:
    """The built-in dataset ``name`` (importing its entry point on first use).

    Raises:
        BuiltinDatasetError: no dataset of that name, or its entry point fails to load.
    """
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _LOADED:
        return _LOADED[name]
    ep = _entry_points().get(name)
    if ep is None:
        raise BuiltinDatasetError(
            f"unknown built-in dataset {name!r}; available: {builtin_dataset_names()}. Install "
            f"the package that provides it (entry-point group {ENTRY_POINT_GROUP!r})."
        )
    where = f"entry point '{ep.name} = {ep.value}' (group {ENTRY_POINT_GROUP!r})"
    try:
        obj = ep.load()
    except Exception as exc:
        raise BuiltinDatasetError(
            f"built-in dataset {name!r} failed to load: {where} raised {type(exc).__name__}: "
            f"{exc}. Reinstall the distribution that provides it."
        ) from exc
    _LOADED[name] = _instance(obj, f"the object named by {where}")
    return _LOADED[name]
