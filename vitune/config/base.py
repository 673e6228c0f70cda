"""What every command's config shares: :class:`CommandConfig`, the value checks and the choices.

A config is a dataclass that checks itself in ``__post_init__`` and says in its error what to
give instead; its defaults are defined once, on the dataclass, and the CLI reads help and
defaults from there (``XConfig.default("field")``).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import MISSING, asdict, fields
from typing import Any, Iterable

from vitune.errors import UserError
from vitune.tasks import TASK_NAMES
from vitune.tasks.labels import UNCERTAIN_POLICIES  # noqa: F401 (--uncertain: listed with the other choices)

TASK_CHOICES = ("auto", *TASK_NAMES)
SPLIT_METHODS = ("auto", "random", "stratified", "group", "official")
POOLINGS = ("cls", "mean")
HEAD_NAMES = ("svm", "logreg", "mlp", "ensemble")
MODEL_HEAD = "model"  # `vitune predict --head model`: the fine-tuned classifier itself
MIN_OPSET = 14  # scaled_dot_product_attention and LayerNorm export from here on
DEFAULT_OPSET = 17


def flag(name: str) -> str:
    """The command-line flag of a config field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise UserError(f"{flag(name)} {value!r} is not supported: use one of {', '.join(choices)}")


def check_positive(name: str, value: Any) -> None:
    """``value`` must be a number above 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise UserError(f"{flag(name)} {value!r} must be a positive number")


def check_count(name: str, value: Any, minimum: int = 1) -> None:
    """``value`` must be a whole number of at least ``minimum`` (a batch size, a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{flag(name)} must be at least {minimum} (got {value!r})")


def parse_heads(heads: str | Iterable[str]) -> list[str]:
    """``"svm,logreg"`` or a list -> validated head names, in ``HEAD_NAMES`` order."""
    names = [h.strip() for h in (heads.split(",") if isinstance(heads, str) else heads) if h.strip()]
    unknown = sorted(set(names) - set(HEAD_NAMES))
    if unknown or not names:
        raise UserError(f"unknown head(s) {', '.join(unknown) or '(none given)'}: choose from {','.join(HEAD_NAMES)}")
    return [h for h in HEAD_NAMES if h in names]


def check_pooling(pooling: str) -> str:
    """Validate a pooling name (a clear error for anything but ``cls``/``mean``)."""
    if pooling not in POOLINGS:
        raise UserError(f"unknown pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
    return pooling


class CommandConfig:
    """Shared behaviour of the commands' config dataclasses.

    Each field is a flag of the command (``--batch-size`` for ``batch_size``), its help the
    field's line in the class docstring's ``Args:`` section. ``arguments`` names the fields that are
    positional on the command line, ``flags`` the fields whose flag is spelled otherwise.
    """

    noun = "setting"  # what an unknown key is called in errors
    arguments: tuple[str, ...] = ()
    flags: dict[str, str] = {}

    @classmethod
    def flag(cls, name: str) -> str:
        """The command-line flag of field ``name``."""
        return cls.flags.get(name, flag(name))

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Field name -> its help, from the ``Args:`` section of the class docstring."""
        doc = inspect.cleandoc(cls.__doc__ or "")
        section = doc.split("Args:", 1)[1] if "Args:" in doc else ""
        helps: dict[str, str] = {}
        for line in section.splitlines():
            entry = re.match(r"^    (\w+): (.*)$", line)
            if entry:
                helps[entry.group(1)] = entry.group(2).strip()
            elif line.startswith("      ") and helps:  # a continuation line
                last = next(reversed(helps))
                helps[last] += " " + line.strip()
        return helps

    @classmethod
    def from_cli(cls, values: dict):
        """The config of a command line's values (every field given, defaults included)."""
        return cls(**values)

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name`` (what the CLI shows and uses)."""
        spec = cls.__dataclass_fields__[name]  # type: ignore[attr-defined]
        if spec.default is not MISSING:
            return spec.default
        if spec.default_factory is not MISSING:
            return spec.default_factory()
        raise KeyError(f"{cls.__name__}.{name} has no default")

    def to_dict(self) -> dict:
        """Plain dict in field order."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def check_known(cls, values: dict) -> None:
        """Reject keys that are not fields, listing the known ones."""
        known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UserError(f"unknown {cls.noun}(s) {', '.join(unknown)}: known ones are {', '.join(known)}")

    @classmethod
    def from_dict(cls, values: dict):
        """Build from a dict, rejecting unknown keys with the list of known ones."""
        cls.check_known(values)
        return cls(**values)
