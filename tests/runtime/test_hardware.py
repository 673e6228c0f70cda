"""The hardware line written into metrics.json: GPUs by name and count, else the CPU."""

import os

import torch

from vitune.runtime.hardware import describe_hardware


def test_cpu_only_names_the_core_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert describe_hardware().startswith(f"CPU, {os.cpu_count()} cores (")


def test_gpus_are_counted_by_name(monkeypatch):
    names = ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "NVIDIA A10"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(names))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: names[index])
    assert describe_hardware() == "2 x NVIDIA H100 80GB HBM3, 1 x NVIDIA A10"
