"""HTML from Jinja2 templates: the report's (``vitune/evaluation/templates``) and the serve page's.

Every page and fragment vitune shows is a template shipped with the package, rendered with
autoescape on (a label, a file name or a config value is always text, never markup) and
``StrictUndefined`` (a value the code forgot to pass is an error, not an empty cell). Fragments
rendered here come back as ``markupsafe.Markup``, so a template that embeds another's output does
not escape it twice.
"""

from __future__ import annotations

import base64
from functools import cache

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


def base64_text(data: bytes) -> str:
    """``data`` as base64 text, for a ``data:`` URI (an image embedded in the page itself)."""
    return base64.b64encode(data).decode("ascii")


@cache
def template_environment(package: str) -> Environment:
    """The Jinja2 environment of the templates in ``package``'s ``templates/`` folder (one per package).

    Filters: ``fmt`` (:func:`fmt`) and ``base64`` (:func:`base64_text`). Block tags take their own
    line with them (``trim_blocks``, ``lstrip_blocks``), so templates can be indented for the reader.
    """
    environment = Environment(loader=PackageLoader(package), autoescape=True, undefined=StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)
    environment.filters["fmt"] = fmt
    environment.filters["base64"] = base64_text
    return environment


def render(template: str, **values) -> Markup:
    """The report template ``template`` (in ``vitune/evaluation/templates``) rendered with ``values``."""
    return Markup(template_environment("vitune.evaluation").get_template(template).render(**values))


def missing(text: str) -> Markup:
    """A note for an optional part of the report that is not there (the ``missing`` macro)."""
    return template_environment("vitune.evaluation").get_template("macros.html.j2").module.missing(text)
