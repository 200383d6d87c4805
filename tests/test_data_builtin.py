"""Built-in datasets found by name (mmvq/data/builtin.py): entry points, code registration,
options and errors."""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import pytest

from mmvq.data import DataConfig, DataError, load_data
from mmvq.data.builtin import (
    BuiltinDataset,
    BuiltinDatasetError,
    builtin_dataset_names,
    get_builtin_dataset,
    register_builtin_dataset,
    unregister_builtin_dataset,
)


@dataclass
class CountOptions:
    start: int = 0


class CountDataset(BuiltinDataset):
    """Rows ``{"number": start + i}``: a dataset that knows no adapter."""

    options_class = CountOptions

    def build(self, *, num_train, num_eval, seed, modalities, options):
        def split(n, offset):
            return datasets.Dataset.from_dict(
                {"number": [options.start + offset + i for i in range(n)]}
            )

        return datasets.DatasetDict(
            {"train": split(num_train, 0), "validation": split(num_eval, 1000)}
        )

    def translation_scorers(self, column_map):
        return {"a->b": lambda generated, sources: 1.0} if column_map.get("a") == "number" else {}


def test_the_shapes_data_arrives_through_the_entry_point_group() -> None:
    from mmvq_adapters.shapes import ShapesDataset

    assert "shapes" in builtin_dataset_names()
    dataset = get_builtin_dataset("shapes")
    assert isinstance(dataset, ShapesDataset) and get_builtin_dataset("shapes") is dataset


@pytest.fixture
def count_dataset():
    register_builtin_dataset("count", CountDataset)
    yield
    unregister_builtin_dataset("count")


def test_a_dataset_registered_in_code_loads_with_its_options(count_dataset) -> None:
    assert "count" in builtin_dataset_names()
    config = DataConfig(
        builtin="count",
        builtin_num_train=3,
        builtin_num_eval=2,
        builtin_options="start=10",
        columns="a=number",
    )
    train, evaluation = load_data(config, ["a"])
    assert train["number"] == [10, 11, 12] and evaluation["number"] == [1010, 1011]
    assert set(get_builtin_dataset("count").translation_scorers(config.column_map(["a"]))) == {
        "a->b"
    }
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['stop'\]"):
        load_data(
            DataConfig(builtin="count", builtin_options={"stop": 1}, columns="a=number"), ["a"]
        )


def test_unknown_and_broken_datasets_are_clear_errors() -> None:
    with pytest.raises(BuiltinDatasetError, match="unknown built-in dataset 'mnist'; available"):
        get_builtin_dataset("mnist")
    with pytest.raises(DataError, match="builtin must be one of"):
        DataConfig(builtin="mnist")
    with pytest.raises(BuiltinDatasetError, match="must be a mmvq.data.builtin.BuiltinDataset"):
        register_builtin_dataset("bad", object())
