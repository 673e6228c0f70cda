"""Source readers on tiny generated data: records, splits, labels and every skipped reason."""

from __future__ import annotations

import io
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitune.data.sources import detect_format, read_source
from vitune.data.sources.base import Record, Skipped, SourceOptions
from vitune.data.sources.chestxray14 import FINDINGS
from vitune.errors import UserError


def png(path: Path, value: int = 128, size: int = 8) -> Path:
    """A tiny grayscale PNG at ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def by_file(records: list[Record]) -> dict[str, Record]:
    return {r.file: r for r in records}


# ---------------------------------------------------------------- imagefolder


def test_imagefolder_class_folders(tmp_path):
    for name in ("cat/a.png", "cat/sub/b.JPG", "dog/c.png", "stray.png"):
        png(tmp_path / name)
    write(tmp_path / "cat" / "notes.txt", "not an image")
    png(tmp_path / ".hidden" / "x.png")
    rows = read_source(tmp_path)
    assert rows.format == "imagefolder"
    assert [(r.file, r.raw_label, r.split) for r in rows.records] == [
        ("cat/a.png", "cat", None),
        ("cat/sub/b.JPG", "cat", None),
        ("dog/c.png", "dog", None),
    ]
    assert rows.skipped == [Skipped("stray.png", "missing label: not inside a class folder")]
    assert rows.task is None and rows.label_order is None and not rows.official_split


def test_imagefolder_split_folders(tmp_path):
    for name in ("train/cat/a.png", "train/dog/b.png", "val/cat/c.png", "valid/dog/d.png", "test/dog/e.png"):
        png(tmp_path / name)
    rows = read_source(tmp_path, "imagefolder")
    assert [(r.file, r.raw_label, r.split) for r in rows.records] == [
        ("test/dog/e.png", "dog", "test"),
        ("train/cat/a.png", "cat", "train"),
        ("train/dog/b.png", "dog", "train"),
        ("val/cat/c.png", "cat", "validation"),
        ("valid/dog/d.png", "dog", "validation"),
    ]


def test_imagefolder_metadata_jsonl_kinds_and_bad_rows(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png", "unlisted.png"):
        png(tmp_path / name)
    png(tmp_path.parent / "outside.png")
    lines = [
        {"file_name": "a.png", "label": ["x", "y"]},
        {"file_name": "b.png", "label": "x"},
        {"file_name": "c.png", "label": 0.5},
        "{not json",
        {"file_name": "d.png"},
        {"file_name": "../outside.png", "label": "x"},
        {"file_name": "/etc/passwd", "label": "x"},
        {"file_name": "gone.png", "label": "x"},
        {"file_name": "a.png", "label": "y"},
        {"label": "x"},
    ]
    write(tmp_path / "metadata.jsonl", "\n".join(json.dumps(l) if isinstance(l, dict) else l for l in lines) + "\n")
    rows = read_source(tmp_path)
    assert rows.format == "imagefolder"
    assert [(r.file, r.raw_label) for r in rows.records] == [("a.png", ["x", "y"]), ("b.png", "x"), ("c.png", 0.5)]
    assert rows.skipped == [
        Skipped("metadata.jsonl line 4", "malformed JSON line: Expecting property name enclosed in double quotes"),
        Skipped("d.png", "missing label"),
        Skipped("../outside.png", "path outside SOURCE"),
        Skipped("/etc/passwd", "absolute path"),
        Skipped("gone.png", "missing file"),
        Skipped("a.png", "listed twice in metadata (metadata.jsonl line 9)"),
        Skipped("metadata.jsonl line 10", "empty file name"),
    ]
    assert rows.label_name == "label"


def test_imagefolder_metadata_per_split_folder_and_label_column(tmp_path):
    png(tmp_path / "train" / "img" / "a.png")
    png(tmp_path / "test" / "b.png")
    write(tmp_path / "train" / "metadata.jsonl", json.dumps({"file_name": "img/a.png", "age": 31, "id": "p1"}) + "\n")
    write(tmp_path / "test" / "metadata.jsonl", json.dumps({"file_name": "b.png", "age": 40, "id": "p2"}) + "\n")
    with pytest.raises(UserError, match="cannot tell the label column among age, id: pass --label-column"):
        read_source(tmp_path)
    rows = read_source(tmp_path, options=SourceOptions(label_columns=["age"], group_column="id"))
    assert [(r.file, r.raw_label, r.group, r.split) for r in rows.records] == [
        ("test/b.png", 40, "p2", "test"),
        ("train/img/a.png", 31, "p1", "train"),
    ]
    assert rows.label_name == "age"
    only_label = read_source(tmp_path, options=SourceOptions(group_column="id"))
    assert [r.raw_label for r in only_label.records] == [40, 31]


def test_imagefolder_metadata_csv_multilabel_separator(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        png(tmp_path / name)
    write(tmp_path / "metadata.csv", "file_name,tags\na.png,x|y\nb.png,y\nc.png,\n")
    rows = read_source(tmp_path)
    assert [(r.file, r.raw_label) for r in rows.records] == [("a.png", ["x", "y"]), ("b.png", ["y"])]
    assert rows.skipped == [Skipped("c.png", "missing label")]
    single = read_source(tmp_path, options=SourceOptions(label_separator=";"))
    assert [r.raw_label for r in single.records] == [["x|y"], ["y"]]


def test_imagefolder_metadata_missing_file_name_column(tmp_path):
    png(tmp_path / "a.png")
    write(tmp_path / "metadata.csv", "image,label\na.png,x\n")
    with pytest.raises(UserError, match="metadata.csv has no column 'file_name'"):
        read_source(tmp_path)


def test_imagefolder_symlink_out_of_source_is_skipped(tmp_path):
    root = tmp_path / "root"
    png(root / "cat" / "a.png")
    png(root / "dog" / "b.png")
    secret = png(tmp_path / "secret.png")
    (root / "dog" / "link.png").symlink_to(secret)
    rows = read_source(root)
    assert [r.file for r in rows.records] == ["cat/a.png", "dog/b.png"]
    assert rows.skipped == [Skipped("dog/link.png", "path outside SOURCE")]


def test_imagefolder_metadata_listing_a_symlink_out_of_source(tmp_path):
    root = tmp_path / "root"
    png(root / "a.png")
    (root / "link.png").symlink_to(png(tmp_path / "secret.png"))
    (root / "linked_dir").symlink_to(tmp_path, target_is_directory=True)
    write(root / "metadata.jsonl", "".join(json.dumps({"file_name": n, "label": "x"}) + "\n"
                                           for n in ("a.png", "link.png", "linked_dir/secret.png")))
    rows = read_source(root)
    assert [r.file for r in rows.records] == ["a.png"]
    assert rows.skipped == [Skipped("link.png", "path outside SOURCE"),
                            Skipped("linked_dir/secret.png", "path outside SOURCE")]


def test_imagefolder_without_images_or_groups_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no images found"):
        read_source(tmp_path, "imagefolder")
    png(tmp_path / "cat" / "a.png")
    with pytest.raises(UserError, match="--group-column needs a label file"):
        read_source(tmp_path, options=SourceOptions(group_column="patient"))


# ---------------------------------------------------------------- csv


def test_csv_multilabel_with_group_and_bad_rows(tmp_path):
    for name in ("imgs/a.png", "imgs/b.png", "imgs/c.png", "imgs/d.png"):
        png(tmp_path / name)
    png(tmp_path.parent / "x.png")
    write(
        tmp_path / "labels.csv",
        "path,findings,patient\n"
        "imgs/a.png,cat;dog,p1\n"
        "imgs\\b.png,dog,p1\n"
        "imgs/c.png,,p2\n"
        "../x.png,cat,p3\n"
        "/abs/d.png,cat,p3\n"
        "imgs/missing.png,cat,p3\n"
        "imgs/sub/../d.png,cat,\n"
        ",cat,p4\n",
    )
    options = SourceOptions(label_columns=["findings"], label_separator=";", group_column="patient")
    rows = read_source(tmp_path, options=options)
    assert rows.format == "csv" and rows.task == "multi_label" and rows.label_name == "findings"
    assert [(r.file, r.raw_label, r.group) for r in rows.records] == [
        ("imgs/a.png", ["cat", "dog"], "p1"),
        ("imgs/b.png", ["dog"], "p1"),
        ("imgs/d.png", ["cat"], None),
    ]
    assert rows.skipped == [
        Skipped("imgs/c.png", "missing label"),
        Skipped("../x.png", "path outside SOURCE"),
        Skipped("/abs/d.png", "absolute path"),
        Skipped("imgs/missing.png", "missing file"),
        Skipped("labels.csv line 9", "empty file name"),
    ]


def test_csv_file_as_source_default_columns(tmp_path):
    png(tmp_path / "a.png")
    png(tmp_path / "b.png")
    csv_path = write(tmp_path / "scores.csv", "File_Name,Score\na.png,0.25\nb.png,3\n")
    rows = read_source(csv_path)
    assert rows.format == "csv" and rows.task is None and rows.label_name == "Score"
    assert [(r.file, r.raw_label, r.group) for r in rows.records] == [("a.png", "0.25", None), ("b.png", "3", None)]


def test_csv_pipe_in_a_value_makes_the_column_multilabel(tmp_path):
    png(tmp_path / "a.png")
    png(tmp_path / "b.png")
    write(tmp_path / "l.csv", "image,label\na.png,x|y\nb.png,x\n")
    rows = read_source(tmp_path)
    assert rows.task == "multi_label"
    assert [r.raw_label for r in rows.records] == [["x", "y"], ["x"]]


@pytest.mark.parametrize(
    "text, options, message",
    [
        ("name,label\na.png,x\n", SourceOptions(), "image column among name, label: pass --image-column"),
        ("image,a,b\na.png,x,y\n", SourceOptions(), "label column among image, a, b: pass --label-column"),
        ("image,label\na.png,x\n", SourceOptions(label_columns=["kind"]), "no column 'kind' \\(--label-column\\)"),
        ("image,label\na.png,x\n", SourceOptions(group_column="pid"), "l.csv has no column 'pid' \\(--group-column\\)"),
        ("", SourceOptions(), "l.csv is empty"),
    ],
)
def test_csv_unusable_columns_are_user_errors(tmp_path, text, options, message):
    png(tmp_path / "a.png")
    write(tmp_path / "l.csv", text)
    with pytest.raises(UserError, match=message):
        read_source(tmp_path, "csv", options)


def test_csv_folder_with_several_csv_files(tmp_path):
    write(tmp_path / "a.csv", "image,label\n")
    write(tmp_path / "b.csv", "image,label\n")
    assert detect_format(str(tmp_path)) == "imagefolder"
    with pytest.raises(UserError, match="several CSV files"):
        read_source(tmp_path, "csv")


# ---------------------------------------------------------------- chestxray14

ENTRY_HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"


def nih_release(root: Path, rows: list[tuple[str, str, str]], entry_name: str = "Data_Entry_2017_v2020.csv",
                folder: str = "images") -> Path:
    for name, _, _ in rows:
        if not name.startswith(("missing", "..", "/")):
            png(root / folder / name)
    body = "".join(f"{name},{labels},0,{patient},50,M,PA\n" for name, labels, patient in rows)
    write(root / entry_name, ENTRY_HEADER + body)
    return root


def test_chestxray14_labels_groups_and_bad_rows(tmp_path):
    nih_release(
        tmp_path,
        [
            ("00000001_000.png", "Cardiomegaly|Effusion", "1"),
            ("00000001_001.png", "No Finding", "1"),
            ("00000002_000.png", "Hernia", "2"),
            ("00000003_000.png", "Pneumonia|Covid", "3"),
            ("00000004_000.png", "No Finding|Mass", "4"),
            ("missing_000.png", "Mass", "5"),
            ("../00000009_000.png", "Mass", "9"),
        ],
        entry_name="Data_Entry_2017.csv",
        folder="images_001/images",
    )
    assert detect_format(str(tmp_path)) == "chestxray14"
    rows = read_source(tmp_path)
    assert rows.format == "chestxray14" and rows.task == "multi_label"
    assert rows.label_order == list(FINDINGS) and len(rows.label_order) == 14
    assert not rows.official_split
    assert [(r.file, r.raw_label, r.group, r.split) for r in rows.records] == [
        ("images_001/images/00000001_000.png", ["Cardiomegaly", "Effusion"], "1", None),
        ("images_001/images/00000001_001.png", [], "1", None),
        ("images_001/images/00000002_000.png", ["Hernia"], "2", None),
    ]
    assert rows.skipped == [
        Skipped("images_001/images/00000003_000.png", "unknown finding 'Covid'"),
        Skipped("images_001/images/00000004_000.png", "'No Finding' together with findings"),
        Skipped("missing_000.png", "missing file"),
        Skipped("../00000009_000.png", "path outside SOURCE"),
    ]


def test_chestxray14_no_finding_as_label_and_official_lists(tmp_path):
    nih_release(
        tmp_path,
        [
            ("00000001_000.png", "No Finding", "1"),
            ("00000002_000.png", "Mass", "2"),
            ("00000003_000.png", "Edema", "3"),
        ],
    )
    write(tmp_path / "train_val_list.txt", "00000001_000.png\n00000002_000.png\n")
    write(tmp_path / "test_list.txt", "00000003_000.png\n")
    rows = read_source(tmp_path, options=SourceOptions(no_finding_as_label=True))
    assert rows.label_order == [*FINDINGS, "No Finding"]
    assert rows.official_split
    assert [(r.file, r.raw_label, r.split) for r in rows.records] == [
        ("images/00000001_000.png", ["No Finding"], "train"),
        ("images/00000002_000.png", ["Mass"], "train"),
        ("images/00000003_000.png", ["Edema"], "test"),
    ]


def test_chestxray14_missing_column_is_a_user_error(tmp_path):
    write(tmp_path / "Data_Entry_2017_v2020.csv", "Image Index,Patient ID\na.png,1\n")
    with pytest.raises(UserError, match="has no column 'Finding Labels'"):
        read_source(tmp_path)


# ---------------------------------------------------------------- cifar


class Python2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2 ``str`` opcodes, like the official CIFAR pickles."""

    def save_bytes(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin1"))

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def py2_pickle(path: Path, obj) -> None:
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the official files were written by NumPy 1.x, whose arrays pickle as numpy.core.multiarray
    path.write_bytes(buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


def cifar_data(n: int, offset: int) -> np.ndarray:
    return ((np.arange(n * 3072).reshape(n, 3072) + offset) % 251).astype(np.uint8)


def test_cifar10_official_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    py2_pickle(folder / "batches.meta", {b"label_names": [b"airplane", b"bird", b"cat"], b"num_vis": 3072})
    py2_pickle(folder / "data_batch_1", {b"batch_label": b"training batch 1 of 5", b"labels": [0, 2, 7],
                                         b"data": cifar_data(3, 0), b"filenames": [b"a.png", b"b.png", b"c.png"]})
    py2_pickle(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": [1],
                                       b"data": cifar_data(1, 5), b"filenames": [b"d.png"]})
    assert detect_format(str(tmp_path)) == "cifar"
    rows = read_source(tmp_path)
    assert rows.format == "cifar" and rows.task == "single_label"
    assert rows.label_order == ["airplane", "bird", "cat"]
    assert [(r.file, r.raw_label, r.split) for r in rows.records] == [
        ("cifar-10-batches-py/data_batch_1#0", "airplane", "train"),
        ("cifar-10-batches-py/data_batch_1#1", "cat", "train"),
        ("cifar-10-batches-py/test_batch#0", "bird", "test"),
    ]
    assert rows.skipped == [Skipped("cifar-10-batches-py/data_batch_1#2", "unknown label index 7")]
    second = rows.records[1].pixels
    assert second.shape == (32, 32, 3) and second.dtype == np.uint8
    planes = cifar_data(3, 0)[1].reshape(3, 32, 32)
    assert np.array_equal(second, planes.transpose(1, 2, 0))


def test_cifar100_uses_fine_labels(tmp_path):
    pickle_file = lambda path, obj: path.write_bytes(pickle.dumps(obj, protocol=4))  # noqa: E731
    pickle_file(tmp_path / "meta", {"fine_label_names": ["apple", "bee"], "coarse_label_names": ["fruit", "insect"]})
    pickle_file(tmp_path / "train", {"fine_labels": [1, 0], "coarse_labels": [1, 0], "data": cifar_data(2, 1)})
    pickle_file(tmp_path / "test", {"fine_labels": [0], "coarse_labels": [0], "data": cifar_data(1, 2)})
    rows = read_source(tmp_path, "cifar")
    assert rows.label_order == ["apple", "bee"]
    assert [(r.file, r.raw_label, r.split) for r in rows.records] == [
        ("train#0", "bee", "train"), ("train#1", "apple", "train"), ("test#0", "apple", "test")]


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_pickle_with_foreign_globals_is_refused(tmp_path, capsys):
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a"]}))
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({"labels": [0], "data": Exploit()}))
    with pytest.raises(UserError, match="global builtins.print is not allowed"):
        read_source(tmp_path)
    assert "pwned" not in capsys.readouterr().out


def test_cifar_object_arrays_are_refused(tmp_path):
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({"label_names": np.array(["a"], dtype=object)}))
    with pytest.raises(UserError, match="object arrays are not allowed"):
        read_source(tmp_path, "cifar")


# ---------------------------------------------------------------- hf


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return tmp_path / "hf-cache"


def encoded_png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_hf_local_parquet_dataset(tmp_path, hf_cache):
    import datasets

    features = datasets.Features({
        "id": datasets.Value("int64"),
        "img": datasets.Image(),
        "tags": datasets.Sequence(datasets.ClassLabel(names=["x", "y"])),
        "label": datasets.ClassLabel(names=["cat", "dog"]),
    })
    table = {"id": [7, 8, 9], "img": [{"bytes": encoded_png(v), "path": None} for v in (10, 20, 30)],
             "tags": [[0], [1, 0], []], "label": [1, -1, 0]}
    full = datasets.Dataset.from_dict(table, features=features)
    folder = tmp_path / "local"
    (folder / "data").mkdir(parents=True)
    full.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    full.select([0]).to_parquet(str(folder / "data" / "validation-00000-of-00001.parquet"))

    rows = read_source(f"hf:{folder}")
    assert rows.format == "hf" and rows.task == "single_label" and rows.label_order == ["cat", "dog"]
    assert [(r.file, r.raw_label, r.split) for r in rows.records] == [
        ("train#0", "dog", "train"), ("train#2", "cat", "train"), ("validation#0", "dog", "validation")]
    assert rows.skipped == [Skipped("train#1", "missing label")]
    assert np.asarray(Image.open(io.BytesIO(rows.records[1].pixels)))[0, 0, 0] == 30

    multi = read_source(f"hf:{folder}", options=SourceOptions(label_columns=["tags"], group_column="id"))
    assert multi.task == "multi_label" and multi.label_order == ["x", "y"]
    assert [(r.raw_label, r.group) for r in multi.records] == [(["x"], "7"), (["y", "x"], "8"), ([], "9"), (["x"], "7")]


def test_hf_save_to_disk_folder_and_numeric_labels(tmp_path, hf_cache):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "score": datasets.Value("float32")})
    data = {"image": [{"bytes": encoded_png(5), "path": None}], "score": [0.5]}
    split = datasets.Dataset.from_dict(data, features=features)
    datasets.DatasetDict({"test": split}).save_to_disk(str(tmp_path / "d"))
    rows = read_source(f"hf:{tmp_path / 'd'}")
    assert rows.task is None and rows.label_order is None
    assert [(r.file, r.raw_label, r.split) for r in rows.records] == [("test#0", 0.5, "test")]
    assert rows.label_name == "score"


def test_hf_image_paths_are_read_only_inside_the_dataset(tmp_path):
    from vitune.data.sources.hf import _encoded_image

    inside = png(tmp_path / "ds" / "a.png")
    outside = png(tmp_path / "b.png")
    allowed = [(tmp_path / "ds").resolve()]
    assert _encoded_image({"bytes": None, "path": str(inside)}, allowed) == inside.read_bytes()
    assert _encoded_image({"bytes": b"png", "path": str(outside)}, allowed) == b"png"
    for image, reason in [({"bytes": None, "path": str(outside)}, "path outside SOURCE"),
                          ({"bytes": None, "path": str(tmp_path / "ds" / "gone.png")}, "missing file"),
                          ({"bytes": None, "path": None}, "missing image"), (None, "missing image")]:
        with pytest.raises(ValueError, match=reason):
            _encoded_image(image, allowed)


def test_hf_without_an_image_column(tmp_path, hf_cache):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"], "label": [0]})}).save_to_disk(
        str(tmp_path / "t"))
    with pytest.raises(UserError, match="has no Image column among text, label: pass --image-column"):
        read_source(f"hf:{tmp_path / 't'}")


def test_hf_errors(tmp_path, hf_cache):
    with pytest.raises(UserError, match="cannot load hf:"):
        read_source(f"hf:{tmp_path / 'nothing-here'}")
    with pytest.raises(UserError, match="names no dataset"):
        read_source("hf:")


# ---------------------------------------------------------------- format detection


def test_detect_format_and_unknown_inputs(tmp_path):
    assert detect_format("hf:cifar100:plain") == "hf"
    png(tmp_path / "one" / "cat" / "a.png")
    assert detect_format(str(tmp_path / "one")) == "imagefolder"
    write(tmp_path / "two" / "labels.csv", "image,label\n")
    assert detect_format(str(tmp_path / "two")) == "csv"
    assert detect_format(str(tmp_path / "two" / "labels.csv")) == "csv"
    write(tmp_path / "two" / "train" / "metadata.jsonl", "")
    assert detect_format(str(tmp_path / "two")) == "imagefolder"
    with pytest.raises(UserError, match="does not exist"):
        detect_format(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="not a label CSV"):
        detect_format(str(png(tmp_path / "x.png")))
    with pytest.raises(UserError, match="unknown --format 'zip'"):
        read_source(tmp_path / "one", "zip")
    with pytest.raises(UserError, match="use --format hf or auto"):
        read_source("hf:x", "csv")


def test_csv_row_repeating_an_image_is_skipped_not_split_twice(tmp_path):
    png(tmp_path / "a.png")
    png(tmp_path / "b.png")
    csv_path = write(tmp_path / "labels.csv", "file_name,label\na.png,cat\nb.png,dog\na.png,dog\n")
    rows = read_source(csv_path)
    assert [(r.file, r.raw_label) for r in rows.records] == [("a.png", "cat"), ("b.png", "dog")]
    assert rows.skipped == [Skipped("a.png", "listed twice in labels.csv (line 4)")]


def test_imagefolder_symlinked_class_folders_are_reported_not_lost(tmp_path):
    root = tmp_path / "root"
    png(root / "dog" / "b.png")
    png(tmp_path / "elsewhere" / "a.png")
    (root / "cat").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "pup").symlink_to(root / "dog", target_is_directory=True)
    rows = read_source(root)
    assert [r.file for r in rows.records] == ["dog/b.png"]
    assert rows.skipped == [
        Skipped("cat/", "path outside SOURCE"),
        Skipped("pup/", "symlinked folder not followed (its target inside SOURCE is read where it lies)"),
    ]
