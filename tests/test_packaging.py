"""An installed wheel holds everything the service reads at run time, not only a checkout:
the migrations (Alembic's env.py, its template and the versions), py.typed, and any other
file that is not a Python module of a package. `.ci/run` also builds the wheel, installs it
in a fresh virtualenv and migrates a database with it."""

from __future__ import annotations

import importlib
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from loyalty import migrator
from loyalty.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "loyalty"


def package_data_patterns() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns: list[str] = pyproject["tool"]["setuptools"]["package-data"]["loyalty"]
    return patterns


def shipped_by_package_data() -> set[Path]:
    """The files under loyalty/ that the package-data globs put in the wheel."""
    return {path for pattern in package_data_patterns() for path in PACKAGE.glob(pattern)}


def package_files() -> list[Path]:
    return [
        path
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]


def is_package_module(path: Path) -> bool:
    """A .py file of a regular package (a folder with __init__.py): setuptools ships it."""
    return path.suffix == ".py" and all(
        (folder / "__init__.py").is_file()
        for folder in [path.parent, *path.parent.parents]
        if folder.is_relative_to(PACKAGE)
    )


def test_every_file_of_the_package_goes_into_the_wheel() -> None:
    shipped = shipped_by_package_data()
    missing = [
        str(path.relative_to(ROOT))
        for path in package_files()
        if not is_package_module(path) and path not in shipped
    ]
    assert missing == [], "add these to [tool.setuptools.package-data] in pyproject.toml"


def test_the_migrations_are_package_data() -> None:
    shipped = shipped_by_package_data()
    migrations = PACKAGE / "migrations"
    assert migrations / "env.py" in shipped
    assert migrations / "script.py.mako" in shipped
    versions = sorted((migrations / "versions").glob("*.py"))
    assert versions and all(path in shipped for path in versions)
    assert PACKAGE / "py.typed" in shipped


def test_alembic_finds_the_migrations_through_the_package() -> None:
    folder = resources.files("loyalty").joinpath("migrations")
    config = migrator.alembic_config()
    assert Path(config.get_main_option("script_location") or "") == Path(str(folder))
    script = ScriptDirectory.from_config(config)
    assert Path(script.dir) == PACKAGE / "migrations"
    assert Path(script.versions) == PACKAGE / "migrations" / "versions"
    assert len(list(script.walk_revisions())) >= 7


def test_gunicorn_finds_the_app_in_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """``gunicorn loyalty.wsgi:app`` works from an installed package, without a checkout."""
    for name in ("LOYALTY_SECRET_KEY", "LOYALTY_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    sys.modules.pop("loyalty.wsgi", None)
    try:
        with pytest.raises(ConfigError, match="LOYALTY_SECRET_KEY"):
            importlib.import_module("loyalty.wsgi")
        monkeypatch.setenv("LOYALTY_SECRET_KEY", "k" * 40)
        module = importlib.import_module("loyalty.wsgi")
        assert module.app.name == "loyalty"
        assert Path(module.__file__ or "") == PACKAGE / "wsgi.py"
    finally:
        sys.modules.pop("loyalty.wsgi", None)
