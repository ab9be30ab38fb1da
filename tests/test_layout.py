"""The boundary between the library and the studies, and the packages' public API."""

import ast
import importlib
import os

import pytest

from tests.conftest import REPO_ROOT

LIBRARY = os.path.join(REPO_ROOT, "uqmix")
PACKAGES = ["uqmix", "uqmix.models", "uqmix.objectives", "uqmix.attacks", "uqmix.data"]


def _imported_modules(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _library_files():
    for root, dirs, names in os.walk(LIBRARY):
        dirs[:] = [d for d in dirs if d not in ("studies", "__pycache__")]
        yield from (os.path.join(root, n) for n in names if n.endswith(".py"))


def test_the_library_never_imports_the_studies():
    files = list(_library_files())
    assert len(files) > 30  # the walk found the library
    offenders = {
        os.path.relpath(f, REPO_ROOT): m
        for f in files
        for m in _imported_modules(f)
        if m == "uqmix.studies" or m.startswith("uqmix.studies.")
    }
    assert not offenders, offenders


def test_the_studies_are_under_uqmix_studies():
    for name in (
        "pn_experiment",
        "mixture_experiment",
        "synthetic_experiment",
        "mixture_report",
        "pn_report",
    ):
        study = os.path.join(LIBRARY, "studies", name)  # a module or a package
        assert os.path.isfile(f"{study}.py") or os.path.isfile(os.path.join(study, "__init__.py"))
        assert not os.path.exists(os.path.join(LIBRARY, f"{name}.py"))
        assert not os.path.exists(os.path.join(LIBRARY, name))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_in_all_is_importable(package):
    module = importlib.import_module(package)
    assert module.__all__ == sorted(set(module.__all__))
    for name in module.__all__:
        value = getattr(module, name, None)
        if value is None:  # a submodule listed for ``from package import *``
            value = importlib.import_module(f"{package}.{name}")
        assert value is not None, (package, name)
