"""vitune: fine-tune vision transformers on your own images.

The library API mirrors the CLI: ``vitune.data.prepare`` is ``vitune data prepare``,
``vitune.train.train`` is ``vitune train`` and so on.
"""

__version__ = "0.2.0"
