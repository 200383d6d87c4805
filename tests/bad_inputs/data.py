"""Bad data files and datasets: each fails before the first training step, naming the file, the
line or row, the column and the fix."""

from __future__ import annotations

import json

import datasets
import numpy as np
import PIL.Image
import soundfile as sf

from bad_inputs.helpers import (
    AdapterInputError,
    DataError,
    case,
    jsonl,
    load,
    rows_with_image,
    validate_dataset,
    write,
)


def _image_text_adapters():
    from mmvq_adapters.image import ImageAdapter
    from mmvq_adapters.text import TextAdapter

    return {"image": ImageAdapter(resolution=16), "text": TextAdapter(max_length=16)}


@case("data", DataError, r"empty\.jsonl holds no rows \(no non-blank line\)")
def empty_jsonl(ctx):
    load(jsonl(ctx, "empty.jsonl", []))


@case("data", DataError, r"blank\.jsonl holds no rows")
def jsonl_of_blank_lines(ctx):
    load(jsonl(ctx, "blank.jsonl", ["", "   ", ""]))


@case("data", DataError, r"bad\.jsonl line 3 is not valid JSON \(Expecting .* at column \d+\)")
def malformed_json_line(ctx):
    rows = [json.dumps({"text": "a"}), json.dumps({"text": "b"}), '{"text": "c",, }']
    load(jsonl(ctx, "bad.jsonl", rows))


@case("data", DataError, r"list\.jsonl line 2 is a JSON list, not an object")
def json_line_that_is_not_an_object(ctx):
    load(jsonl(ctx, "list.jsonl", [json.dumps({"text": "a"}), "[1, 2]"]))


@case("data", DataError, r"latin\.jsonl line 2 is not UTF-8 text")
def jsonl_that_is_not_utf8(ctx):
    load(write(ctx, "latin.jsonl", b'{"text": "a"}\n{"text": "caf\xe9"}\n'))


@case("data", DataError, r"doc\.json is not valid JSON: .* at line 3, column \d+")
def malformed_json_document(ctx):
    load(write(ctx, "doc.json", '[\n  {"text": "a"},\n  {"text": }\n]\n'))


@case("data", DataError, r"surrogate\.jsonl line 2, column 'text': .* lone surrogate")
def lone_surrogate_in_a_jsonl_caption(ctx):
    rows = [json.dumps({"text": "fine"}), json.dumps({"text": "a \ud800 b"})]
    load(jsonl(ctx, "surrogate.jsonl", rows))


@case(
    "data",
    AdapterInputError,
    r"train\.jsonl line 151 \(row 150\), column 'image' .* not an image PIL can read.*"
    r"--on_bad_row skip",
)
def corrupt_image_at_row_150(ctx):
    from train_helpers import tiny_model

    from bad_inputs.helpers import train_config
    from mmvq.training import train

    (ctx.tmp / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ds, _ = load(rows_with_image(ctx, 160, {150: "corrupt.png"}))
    out = ctx.tmp / "run"
    try:
        train(tiny_model(), ds, train_config(out))
    finally:  # refused before the first step: nothing was trained or logged
        assert not (out / "train_log.jsonl").exists() and not (out / "checkpoints").exists()


@case("data", DataError, r"train\.jsonl line 3 \(row 2\), column 'image' names file 'gone\.png'")
def missing_image_file_at_row_2(ctx):
    load(rows_with_image(ctx, 5, {2: "gone.png"}))


@case("data", DataError, r"empty\.csv' could not be read as csv")
def empty_csv(ctx):
    load(write(ctx, "empty.csv", ""))


@case("data", DataError, r"ragged\.csv' could not be read as csv: .*Expected 2 fields in line 3")
def csv_with_a_ragged_row(ctx):
    load(write(ctx, "ragged.csv", "image,text\na.png,x\nb.png,y,z\n"))


@case("data", DataError, r"broken\.parquet' could not be read as parquet")
def corrupt_parquet(ctx):
    load(write(ctx, "broken.parquet", b"PAR1 this is not parquet"))


@case("data", DataError, r"column 'text' \(modality 'text'\) is not in .*column_map\['text'\]")
def missing_text_column(ctx):
    ds = datasets.Dataset.from_dict({"image": [PIL.Image.new("RGB", (16, 16))], "caption": ["a"]})
    validate_dataset(ds, {"image": "image", "text": "text"}, _image_text_adapters(), batch_size=1,
                     drop_last=False)  # fmt: skip


@case("data", DataError, r"1 row\(s\) have no modality .* rows \[1\]")
def row_without_any_modality(ctx):
    ds = datasets.Dataset.from_dict({"text": ["a", None, "c"]})
    validate_dataset(ds, {"text": "text"}, _image_text_adapters(), batch_size=1, drop_last=False)


@case("data", DataError, r"batch_size=8 is larger than the dataset \(3 usable rows\)")
def batch_larger_than_the_data(ctx):
    ds = datasets.Dataset.from_dict({"text": ["a", "b", "c"]})
    validate_dataset(ds, {"text": "text"}, _image_text_adapters(), batch_size=8, drop_last=True)


@case("data", DataError, r"every checked row \(2\) of the dataset is bad")
def every_row_bad_with_skip(ctx):
    ds = datasets.Dataset.from_dict({"text": ["   ", ""]})
    validate_dataset(ds, {"text": "text"}, _image_text_adapters(), batch_size=1,
                     drop_last=False, on_bad_row="skip")  # fmt: skip


@case("data", DataError, r"the dataset stream is empty")
def empty_stream(ctx):
    features = datasets.Features({"text": datasets.Value("string")})
    ds = datasets.IterableDataset.from_generator(lambda: iter([]), features=features)
    validate_dataset(ds, {"text": "text"}, _image_text_adapters(), batch_size=1, drop_last=False)


@case("data", AdapterInputError, r"example 2 of the stream .* column 'text'.* text is empty")
def bad_row_arriving_in_a_stream(ctx):
    from mmvq.data import MultimodalIterableDataset

    ds = datasets.Dataset.from_dict({"text": ["a", "b", " ", "d"]}).to_iterable_dataset()
    stream = MultimodalIterableDataset(ds, _image_text_adapters(), {"text": "text"}, rank=0,
                                       world_size=1)  # fmt: skip
    list(stream)


@case("data", AdapterInputError, r"sounds\.jsonl line 2 \(row 1\), column 'audio'.*= 1000 Hz")
def audio_file_at_1000_hz_in_a_data_file(ctx):
    from mmvq_adapters.audio import AudioAdapter
    from mmvq_adapters.text import TextAdapter

    sf.write(ctx.tmp / "ok.wav", np.zeros(800, np.float32), 8000)
    sf.write(ctx.tmp / "slow.wav", np.zeros(800, np.float32), 1000)
    rows = [json.dumps({"audio": f, "text": "t"}) for f in ("ok.wav", "slow.wav")]
    path = jsonl(ctx, "sounds.jsonl", rows)
    adapters = {"audio": AudioAdapter(sample_rate=8000), "text": TextAdapter(max_length=16)}
    from mmvq.data import DataConfig, load_data

    ds, _ = load_data(DataConfig(train_file=str(path)), adapters)
    validate_dataset(ds, {"audio": "audio", "text": "text"}, adapters, batch_size=1,
                     drop_last=False)  # fmt: skip
