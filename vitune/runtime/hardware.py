"""What a process runs on, in words: the GPUs torch sees (name and count), else the CPU's core count.

Written into ``metrics.json`` (``"hardware"``) by training, so a report can say what a run ran on.
"""

from __future__ import annotations

import os
import platform


def describe_hardware() -> str:
    """``"2 x NVIDIA H100 80GB HBM3"``, or ``"CPU, 16 cores (x86_64)"`` when torch sees no GPU."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        names = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
        counted = {name: names.count(name) for name in dict.fromkeys(names)}
        return ", ".join(f"{count} x {name}" for name, count in counted.items())
    return f"CPU, {os.cpu_count()} cores ({platform.machine() or 'unknown architecture'})"
