"""A run cut short after its first epoch, as a killed run would be: the first half of the resume tests.

In-process tests add :class:`StopAfterFirstEpoch` to the trainer themselves; run as a script (under
``torchrun``, with ``vitune train``'s arguments), this module trains through the CLI with it added.
"""

from __future__ import annotations

import sys

from transformers import TrainerCallback


class StopAfterFirstEpoch(TrainerCallback):
    """Simulates an interrupted run: stops once epoch 1 is evaluated and checkpointed."""

    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_training_stop = True


def interrupted(build_trainer):
    """``build_trainer`` whose trainers stop after their first epoch."""

    def build(*args, **kwargs):
        trainer = build_trainer(*args, **kwargs)
        trainer.add_callback(StopAfterFirstEpoch())
        return trainer

    return build


if __name__ == "__main__":
    import vitune.training.fine_tune as fine_tune
    from vitune.cli import main

    fine_tune.build_trainer = interrupted(fine_tune.build_trainer)
    sys.argv = ["vitune", "train", *sys.argv[1:]]
    main()
