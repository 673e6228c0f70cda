"""What every command's config shares: :class:`CommandConfig`, the value checks and the choices.

A config is a dataclass that checks its values in ``__post_init__`` and says in its error what to
give instead. Constructing one reads no file: paths are checked where the command runs. Its
defaults and help (the ``Args:`` section of the class docstring) are defined once, on the
dataclass, and the CLI (:mod:`vitune.cli`) is generated from them. :meth:`CommandConfig.from_flags`
builds a config from a ``--config`` YAML file's values and the flags given.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any, ClassVar

import yaml

from vitune.errors import UserError
from vitune.tasks import TASK_NAMES

TASK_CHOICES = ("auto", *TASK_NAMES)
SPLIT_METHODS = ("auto", "random", "stratified", "group", "official")
POOLINGS = ("cls", "mean")
HEAD_NAMES = ("svm", "logreg", "mlp", "ensemble")
MODEL_HEAD = "model"  # `vitune predict --head model`: the fine-tuned classifier itself
BACKENDS = ("torch", "onnx", "onnx-int8")  # --backend of predict, evaluate and serve
TTA_MODES = ("none", "flip", "crops")  # --tta of predict, evaluate and serve
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


def split_names(value: str | Iterable[str] | None) -> list[str] | None:
    """A list setting as a list of names: ``"a,b"``, ``["a,b", "c"]`` and ``["a", "b", "c"]`` all become one list.

    The CLI gives a list (``--heads svm logreg`` or ``--heads svm,logreg``), a config.yaml written
    before 0.3 a comma-separated string; both are read here. None (not given) stays None.
    """
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    names = []
    for item in items:
        names.extend(name.strip() for name in str(item).split(","))
    return [name for name in names if name]


def parse_heads(heads: str | Iterable[str]) -> list[str]:
    """``"svm,logreg"`` or a list -> validated head names, in ``HEAD_NAMES`` order."""
    names = split_names(heads)
    unknown = sorted(set(names) - set(HEAD_NAMES))
    if unknown or not names:
        raise UserError(f"unknown head(s) {', '.join(unknown) or '(none given)'}: choose from {','.join(HEAD_NAMES)}")
    return [h for h in HEAD_NAMES if h in names]


def check_pooling(pooling: str) -> str:
    """Validate a pooling name (a clear error for anything but ``cls``/``mean``)."""
    if pooling not in POOLINGS:
        raise UserError(f"unknown pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
    return pooling


def read_yaml(path: Path | str) -> dict:
    """The mapping a YAML config file holds (a missing, unreadable or non-mapping file is a UserError)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist: give a YAML file such as RUN_DIR/config.yaml")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(values, dict):
        raise UserError(f"{path} must hold a mapping of setting: value")
    return values


def _number_type(annotation: Any) -> type | None:
    """``float`` or ``int`` for a number field (``float``, ``int | None``...), else None."""
    members = typing.get_args(annotation) or (annotation,)
    for kind in (float, int):
        if kind in members:
            return kind
    return None


def _plain(value: Any) -> Any:
    """A setting as YAML writes it: a path as text, a pair (``crop_scale``) as a list."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


class CommandConfig:
    """Shared behaviour of the commands' config dataclasses.

    Each field is a flag of the command (``--batch-size`` for ``batch_size``), its help the
    field's line in the class docstring's ``Args:`` section. ``arguments`` maps the fields that are
    positional on the command line to their name in the usage (``{"run": "RUN_DIR"}``), ``flags``
    the fields whose flag is spelled otherwise, and ``usage`` is the command line that a missing
    setting's error shows.
    """

    noun = "setting"  # what an unknown key is called in errors
    arguments: ClassVar[dict[str, str]] = {}
    flags: ClassVar[dict[str, str]] = {}
    usage = ""

    @classmethod
    def flag(cls, name: str) -> str:
        """How field ``name`` is given on the command line: its flag, or its positional name."""
        return cls.arguments.get(name) or cls.flags.get(name, flag(name))

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name`` (what the CLI shows and uses)."""
        spec = cls.__dataclass_fields__[name]  # type: ignore[attr-defined]
        if spec.default is not MISSING:
            return spec.default
        if spec.default_factory is not MISSING:
            return spec.default_factory()
        raise KeyError(f"{cls.__name__}.{name} has no default")

    @classmethod
    def field_help(cls, name: str) -> str | None:
        """The help of field ``name``: its line in the ``Args:`` section of the nearest class that documents it.

        A config that extends another (``TrainConfig`` extends ``TrainerConfig``) documents only its own
        fields; the shared ones keep their help where they are defined.
        """
        import docstring_parser

        for klass in cls.__mro__:
            for param in docstring_parser.parse(klass.__doc__ or "").params:
                if param.arg_name == name:
                    return " ".join((param.description or "").split())  # continuation lines joined
        return None

    @classmethod
    def required(cls) -> list[str]:
        """The fields without a default, in declaration order."""
        return [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        """Plain dict in field order, paths as text: what a YAML config file holds."""
        values = asdict(self)  # type: ignore[call-overload]
        return {name: _plain(value) for name, value in values.items()}

    def to_yaml(self) -> str:
        """The YAML text of this config, fields in declaration order (``--config`` reads it back)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def check_known(cls, values: dict) -> None:
        """Reject keys that are not fields, listing the known ones."""
        known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UserError(f"unknown {cls.noun}(s) {', '.join(unknown)}: known ones are {', '.join(known)}")

    @classmethod
    def numbers_from_text(cls, values: dict) -> dict:
        """Number settings given as text become numbers: PyYAML (YAML 1.1) reads ``lr: 2e-4`` as a string."""
        annotations = typing.get_type_hints(cls)
        converted = dict(values)
        for name, value in values.items():
            kind = _number_type(annotations.get(name))
            if kind is None or not isinstance(value, str):
                continue
            try:
                converted[name] = kind(value)
            except ValueError:
                pass  # left as text: __post_init__ reports it with the flag's name
        return converted

    @classmethod
    def from_dict(cls, values: dict):
        """Build from a dict, rejecting unknown keys with the known ones and naming the missing settings."""
        cls.check_known(values)
        values = cls.numbers_from_text(values)
        missing = [cls.flag(name) for name in cls.required() if values.get(name) in (None, "", [])]
        if missing:
            raise UserError(f"missing {', '.join(missing)}: `{cls.usage}` (or set them in the --config file)")
        return cls(**values)

    @classmethod
    def from_flags(cls, given: dict, config_file: Path | str | None = None):
        """The config of a command line: the flags ``given`` over the ``--config`` file's values over the defaults."""
        values = read_yaml(config_file) if config_file is not None else {}
        return cls.from_dict({**values, **given})

    @classmethod
    def from_yaml(cls, path: Path | str, **overrides):
        """Load a YAML config; ``overrides`` that are not None win over the file's values."""
        return cls.from_flags({k: v for k, v in overrides.items() if v is not None}, path)
