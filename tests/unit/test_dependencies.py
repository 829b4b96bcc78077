"""Declared dependencies against what the package imports, where deptry cannot see: Airflow's providers share
the ``airflow`` namespace, so deptry credits every ``airflow.*`` import to apache-airflow (see
``[tool.deptry]`` in pyproject.toml, which `make lint` runs)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "airflow_provider_cex"
#: Needed at run time but never imported: ObjectStoragePath loads the amazon provider's s3 filesystem.
LOADED_BY_AIRFLOW = {"apache-airflow-providers-amazon"}


def _declared() -> set[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    texts = list(project["dependencies"])
    for group in project["optional-dependencies"].values():
        texts += group
    return {Requirement(text).name for text in texts}


def _imported_modules() -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
    return found


def provider_module(distribution: str) -> str:
    """``apache-airflow-providers-common-compat`` -> ``airflow.providers.common.compat``."""
    return "airflow.providers." + distribution.removeprefix("apache-airflow-providers-").replace("-", ".")


def test_every_declared_provider_is_imported_by_the_package():
    imported = _imported_modules()
    providers = {name for name in _declared() if name.startswith("apache-airflow-providers-")}
    assert providers, "pyproject.toml declares no Airflow provider: the check below would prove nothing"
    unused = {
        name
        for name in providers - LOADED_BY_AIRFLOW
        if not any(m == provider_module(name) or m.startswith(provider_module(name) + ".") for m in imported)
    }
    assert not unused, (
        f"declared in pyproject.toml but never imported by airflow_provider_cex: {sorted(unused)}"
    )


def test_every_imported_provider_is_declared():
    declared = {provider_module(name) for name in _declared() if name.startswith("apache-airflow-providers-")}
    used = {
        ".".join(m.split(".")[:4])
        if m.startswith("airflow.providers.common.")
        else ".".join(m.split(".")[:3])
        for m in _imported_modules()
        if m.startswith("airflow.providers.")
    }
    assert used, "the package imports no airflow.providers module: the check below would prove nothing"
    assert not used - declared, f"imported but not declared in pyproject.toml: {sorted(used - declared)}"


def test_provider_module_names():
    assert provider_module("apache-airflow-providers-common-compat") == "airflow.providers.common.compat"
    assert provider_module("apache-airflow-providers-openlineage") == "airflow.providers.openlineage"
