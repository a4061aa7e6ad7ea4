"""The docs site: the API reference covers every public name, and `mkdocs build --strict`
passes (a broken link, a page left out of the nav or an unresolvable name fails CI here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import griffe
import pytest

import spec_sdk

ROOT = Path(__file__).resolve().parent.parent
API_PAGE = ROOT / "docs" / "api.md"


def test_api_reference_covers_every_public_name():
    documented = set(re.findall(r"^::: spec_sdk\.(\w+)\s*$", API_PAGE.read_text(), flags=re.MULTILINE))
    missing = sorted(set(spec_sdk.__all__) - documented)
    assert not missing, f"add to docs/api.md: {missing}"


@pytest.fixture(scope="module")
def package() -> griffe.Module:
    # read statically, as mkdocstrings does, so these are the docstrings the page shows
    return griffe.load("spec_sdk", search_paths=[str(ROOT)])


@pytest.mark.parametrize("name", spec_sdk.__all__)
def test_public_name_has_a_docstring(package, name):
    docstring = package[name].docstring
    assert docstring is not None and docstring.value.strip(), f"spec_sdk.{name} has no docstring"


def test_mkdocs_build_strict(tmp_path):
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1"}
    # no --quiet: in mkdocs 1.6 it hides warnings from --strict too, and a broken link passes
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "api" / "index.html").exists()
