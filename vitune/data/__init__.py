"""Data: SOURCE -> DATASET_DIR (``prepare``), inspecting it (``show``), opening it (``load_dataset_dir``)."""

from vitune.data.dataset_dir import DatasetInfo, load_dataset_dir
from vitune.data.prepare import prepare
from vitune.data.show import show

__all__ = ["DatasetInfo", "load_dataset_dir", "prepare", "show"]
