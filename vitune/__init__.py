"""vitune: fine-tune vision transformers on your own images.

The library API mirrors the CLI: ``vitune.data.prepare`` is ``vitune data prepare``,
``vitune.training.fine_tune.train`` is ``vitune train`` and so on.
"""

from vitune.runtime.version import VITUNE_VERSION as __version__

__all__ = ["__version__"]
