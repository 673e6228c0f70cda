"""The architecture holds: the layers of pyproject.toml, no import cycle, a small package face,
one home for the model families, HTML only in templates, a docstring on everything public.

``mkdocs build --strict`` is not run from here: ``make test`` runs it before pytest.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import grimp
import networkx
import pytest

import vitune

PACKAGE = Path(vitune.__file__).parent
ROOT = PACKAGE.parent
MAX_TOP_LEVEL_MODULES = 6
FAMILIES_MODULE = "models/families.py"
MODEL_TYPES = {"vit", "deit", "swin", "swinv2", "beit", "dinov2", "vit_mae", "vit_mean_pool"}
# The elements of the HTML standard (https://html.spec.whatwg.org/#elements-3): a tag is one of them right
# after "<" or "</", so "low < high" or a repr like "<task multi_label>" is not taken for markup.
HTML_ELEMENTS = """
a abbr address area article aside audio b base bdi bdo blockquote body br button canvas caption cite code col colgroup
data datalist dd del details dfn dialog div dl dt em embed fieldset figcaption figure footer form h1 h2 h3 h4 h5 h6 head
header hgroup hr html i iframe img input ins kbd label legend li link main map mark menu meta meter nav noscript object
ol optgroup option output p picture pre progress q rp rt ruby s samp script search section select slot small source span
strong style sub summary sup svg table tbody td template textarea tfoot th thead time title tr track u ul var video wbr
""".split()
HTML_TAG = re.compile(rf"</?(?:{'|'.join(HTML_ELEMENTS)})(?=[\s/>])", re.IGNORECASE)


def source_files() -> list[Path]:
    """Every ``.py`` file of the package."""
    return sorted(PACKAGE.rglob("*.py"))


def relative(path: Path) -> str:
    """``path`` relative to the package folder, with forward slashes."""
    return path.relative_to(PACKAGE).as_posix()


def module_name(path: Path) -> str:
    """The dotted module name of a package file (``vitune.heads`` for ``heads/__init__.py``)."""
    return ".".join(["vitune", *path.relative_to(PACKAGE).with_suffix("").parts]).removesuffix(".__init__")


def docstring_nodes(tree: ast.Module) -> set[ast.Constant]:
    """The string constants of a module that are docstrings (of the module, a class or a function)."""
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, documented) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(first.value)
    return docstrings


def code_strings(path: Path) -> list[str]:
    """The string constants of a module's code, docstrings left out; an f-string gives its literal parts."""
    tree = ast.parse(path.read_text())
    docstrings = docstring_nodes(tree)
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node not in docstrings
    ]


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Each group of modules that import one another, directly or through others (a strongly connected component).

    networkx finds the components; grimp gives the imports, those inside functions included.
    """
    imports = networkx.DiGraph()
    for module in graph.modules:
        imports.add_node(module)
        for imported in graph.find_modules_directly_imported_by(module):
            imports.add_edge(module, imported)
    components = networkx.strongly_connected_components(imports)
    return sorted(sorted(component) for component in components if len(component) > 1)


def test_lint_imports_passes():
    """The layer contracts of ``[tool.importlinter]`` in pyproject.toml hold for this checkout."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": python_path},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_import_cycle_between_modules():
    graph = grimp.build_graph("vitune", include_external_packages=False, exclude_type_checking_imports=True,
                              cache_dir=None)
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path, monkeypatch):
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "first.py").write_text("from cyclic import second\n")
    (package / "second.py").write_text("def late():\n    from cyclic import third\n")
    (package / "third.py").write_text("import cyclic.first\n")
    (package / "alone.py").write_text("import cyclic.first\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    graph = grimp.build_graph("cyclic", include_external_packages=False, cache_dir=None)

    assert import_cycles(graph) == [["cyclic.first", "cyclic.second", "cyclic.third"]]


def test_the_package_face_is_small():
    top_level = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top_level) <= MAX_TOP_LEVEL_MODULES, top_level


def test_one_module_names_the_model_families():
    named = {}
    for path in source_files():
        found = MODEL_TYPES.intersection(code_strings(path))
        if found:
            named[relative(path)] = sorted(found)
    assert named == {FAMILIES_MODULE: sorted(MODEL_TYPES)}


def test_no_python_string_holds_an_html_tag():
    """Markup lives in the Jinja2 templates; a docstring may still show a ``<placeholder>``."""
    tagged = {}
    for path in source_files():
        strings = [text for text in code_strings(path) if HTML_TAG.search(text)]
        if strings:
            tagged[relative(path)] = strings
    assert tagged == {}


@pytest.mark.parametrize(
    ("text", "is_tag"),
    [
        ('<div class="card">', True),
        ("</td></tr>", True),
        ('<img alt="', True),
        ("<br/>", True),
        ("need low < high", False),
        ("<task multi_label>", False),
        ("eval/<split>/", False),
    ],
)
def test_the_tag_pattern_tells_markup_from_other_angle_brackets(text, is_tag):
    assert bool(HTML_TAG.search(text)) is is_tag


def public_members_without_docstring(module) -> list[str]:
    """Public functions, classes and class methods defined in ``module`` that have no docstring.

    ``inspect.getdoc`` counts a docstring inherited from the method a class overrides.
    """
    missing = []
    for name, value in vars(module).items():
        if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue
        if not (inspect.isfunction(value) or inspect.isclass(value)):
            continue
        if not inspect.getdoc(value):
            missing.append(f"{module.__name__}.{name}")
        if inspect.isclass(value):
            for method_name, method in vars(value).items():
                if method_name.startswith("_") or not inspect.isfunction(method):
                    continue
                if not inspect.getdoc(getattr(value, method_name)):
                    missing.append(f"{module.__name__}.{name}.{method_name}")
    return missing


def test_every_public_function_and_class_has_a_docstring():
    missing = []
    for path in source_files():
        missing += public_members_without_docstring(importlib.import_module(module_name(path)))
    assert missing == []
