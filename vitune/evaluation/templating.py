"""HTML from Jinja2 templates: the report's (``vitune/evaluation/templates``) and the serve page's.

Every page and fragment vitune shows is a template shipped with the package, rendered with
autoescape on (a label, a file name or a config value is always text, never markup) and
``StrictUndefined`` (a value the code forgot to pass is an error, not an empty cell). Fragments
rendered here come back as ``markupsafe.Markup``, so a template that embeds another's output does
not escape it twice.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from functools import cache, wraps

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup


def fmt(value) -> str:
    """A table cell: floats to 4 decimals (3 significant digits when tiny or huge), ``[low, high]``, n/a for None."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if value == 0 or 0.01 <= abs(value) < 1e4 else f"{value:.3g}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"[{fmt(float(value[0]))}, {fmt(float(value[1]))}]"
    return str(value)


def number_filter(format_number: Callable[[float], str]) -> Callable[[object], str]:
    """A filter that formats numbers with ``format_number``; None is ``n/a``, anything else its text."""

    @wraps(format_number)
    def filter_value(value) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return str(value)
        return format_number(value)

    return filter_value


@number_filter
def integer(value) -> str:
    """A count or an epoch: a whole number (``1.0`` -> ``1``, thousands grouped); a fraction keeps 2 decimals."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.2f}"


@number_filter
def significant(value) -> str:
    """A duration or a rate: 3 significant digits, whole numbers from 100 up (``108.289`` -> ``108``, ``0.01234`` -> ``0.0123``)."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


@number_filter
def scientific(value) -> str:
    """A learning rate: scientific notation with 3 significant digits (``0.0002`` -> ``2.00e-04``)."""
    return f"{value:.2e}"


INTEGER_COLUMNS = {"epoch", "step", "fold", "n", "positives", "support", "unknown", "images", "num_samples", "dim"}
SCIENTIFIC_COLUMNS = {"lr", "learning_rate"}


def by_column(value, column: str) -> str:
    """A table cell formatted for its column: counts and epochs as integers (:func:`integer`), learning
    rates in scientific notation, seconds and rates to 3 significant digits, anything else by :func:`fmt`."""
    name = str(column).lower()
    if name in INTEGER_COLUMNS:
        return integer(value)
    if name in SCIENTIFIC_COLUMNS or name.endswith("_lr"):
        return scientific(value)
    if "second" in name or name.endswith(" s") or name.endswith("_s"):
        return significant(value)
    return fmt(value)


def base64_text(data: bytes) -> str:
    """``data`` as base64 text, for a ``data:`` URI (an image embedded in the page itself)."""
    return base64.b64encode(data).decode("ascii")


@cache
def template_environment(package: str) -> Environment:
    """The Jinja2 environment of the templates in ``package``'s ``templates/`` folder (one per package).

    Filters, the one place where numbers are formatted for people (the JSON files keep raw values):
    ``fmt`` (:func:`fmt`: metrics to 4 decimals, intervals), ``integer``, ``significant`` (seconds
    and rates), ``scientific`` (learning rates), ``by_column`` (a table cell by its column's name)
    and ``base64`` (:func:`base64_text`). Block tags take their own
    line with them (``trim_blocks``, ``lstrip_blocks``), so templates can be indented for the reader.
    """
    environment = Environment(loader=PackageLoader(package), autoescape=True, undefined=StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)
    environment.filters["fmt"] = fmt
    environment.filters["integer"] = integer
    environment.filters["significant"] = significant
    environment.filters["scientific"] = scientific
    environment.filters["by_column"] = by_column
    environment.filters["base64"] = base64_text
    return environment


def render(template: str, **values) -> Markup:
    """The report template ``template`` (in ``vitune/evaluation/templates``) rendered with ``values``."""
    return Markup(template_environment("vitune.evaluation").get_template(template).render(**values))


def missing(text: str) -> Markup:
    """A note for an optional part of the report that is not there (the ``missing`` macro)."""
    return template_environment("vitune.evaluation").get_template("macros.html.j2").module.missing(text)
