"""The out-of-distribution flag of a chest-film run: held-out films flagged, and images of other kinds.

Reads ``RUN_DIR/ood.safetensors`` (a run trained before the flag existed gets its statistics fitted
here, in memory, as `vitune train` fits them: the classifier's input on at most 20,000 training
images, the threshold at the 99th percentile of validation). Prints the statistics, the share of
the test split flagged (about 1 % by design) and the distance of a generated photograph, knee film
and blank frame (``vitune.data.synthetic``) at the run's size, with whether each is flagged.

    .venv/bin/python bench/ood.py runs/demo
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from vitune.data.dataset_dir import load_dataset_dir
from vitune.data.synthetic import blank_frame, knee_film_like, photo_like
from vitune.models.forward import pixel_batches
from vitune.models.ood import OodStatistics, fit_run_ood, run_features
from vitune.models.run import load_run

BATCH = 64


def main() -> None:
    """Measure and print (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="RUN_DIR of a run on chest films (e.g. runs/demo)")
    parser.add_argument("--split", default="test", help="held-out split to count the flagged films of")
    args = parser.parse_args()

    run = load_run(args.run, "cpu")
    dataset_dir = run.dir.dataset_dir()
    statistics = OodStatistics.load(run.dir.ood)
    if statistics is None:
        start = time.perf_counter()
        statistics = fit_run_ood(run, dataset_dir, BATCH)
        print(f"fitted the statistics here in {time.perf_counter() - start:.1f} s (the run has no ood.safetensors)")
    print("statistics:", statistics.summary())

    ds, _ = load_dataset_dir(dataset_dir)
    held_out = ds[args.split]
    distances = statistics.distances(run_features(run, pixel_batches(held_out, BATCH),
                                                  math.ceil(len(held_out) / BATCH), f"features {args.split}"))
    flagged = statistics.flags(distances)
    print(f"{args.split}: {flagged.sum()} of {len(flagged)} films flagged ({100 * flagged.mean():.1f} %), "
          f"distance median {np.median(distances):.1f}, max {distances.max():.1f}, threshold {statistics.threshold:.1f}")

    size = run.prep.image_size
    others = {"photograph": photo_like(size), "knee film": knee_film_like(size), "blank frame": blank_frame(size)}
    other_distances = statistics.distances(run_features(run, [np.stack(list(others.values()))]))
    for (name, _), distance in zip(others.items(), other_distances):
        print(f"{name}: distance {distance:.1f}, flagged {bool(distance > statistics.threshold)}")


if __name__ == "__main__":
    main()
