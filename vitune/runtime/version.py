"""The installed vitune version, read from the package metadata (``pyproject.toml`` is its one home)."""

from importlib.metadata import version

VITUNE_VERSION = version("vitune")
