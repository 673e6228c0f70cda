"""The shape the codebase keeps: small modules and functions, task knowledge in vitune/tasks.py only."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import vitune

PACKAGE = Path(vitune.__file__).parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
TASK_NAMES = ("multi_label", "single_label", "regression")


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_over_400_lines():
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in modules()}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_no_function_over_60_lines():
    long = {}
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE).as_posix()}:{node.name}"] = lines
    assert long == {}


def _task_string_comparisons(source: str) -> int:
    """``==``/``!=``/``in`` comparisons with a task name literal on either side."""
    count = 0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            literals = [s.value for s in sides if isinstance(s, ast.Constant)]
            literals += [e.value for s in sides if isinstance(s, (ast.Tuple, ast.List, ast.Set))
                         for e in s.elts if isinstance(e, ast.Constant)]
            count += any(value in TASK_NAMES for value in literals)
    return count


def test_task_names_are_compared_only_in_tasks_py():
    found = {p.relative_to(PACKAGE).as_posix(): _task_string_comparisons(p.read_text()) for p in modules()}
    outside = {name: n for name, n in found.items() if n and name != "tasks.py"}
    assert outside == {} and sum(found.values()) <= 6


def test_the_comparison_counter_sees_comparisons():
    assert _task_string_comparisons('if task == "regression" or kind in ("single_label", "x"): pass') == 2
    assert _task_string_comparisons('task = "regression"') == 0


def test_heads_is_a_package_with_one_module_per_head():
    heads = PACKAGE / "heads"
    assert (heads / "__init__.py").is_file()
    assert {"svm.py", "logreg.py", "mlp.py", "ensemble.py", "run_classifier.py"} <= {p.name for p in heads.iterdir()}


def test_every_public_function_and_class_has_a_docstring():
    """Methods overriding a documented base method inherit its docstring (``inspect.getdoc``)."""
    missing = []
    for path in modules():
        name = "vitune." + path.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
        module = importlib.import_module(name.removesuffix(".__init__"))
        for attr, value in vars(module).items():
            if attr.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(value) or inspect.isclass(value):
                missing += [] if inspect.getdoc(value) else [f"{module.__name__}.{attr}"]
            if inspect.isclass(value):
                missing += [f"{module.__name__}.{attr}.{m}" for m, f in vars(value).items()
                            if inspect.isfunction(f) and not m.startswith("_") and not inspect.getdoc(getattr(value, m))]
    assert missing == []
