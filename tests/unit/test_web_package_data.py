"""Every file the browser clients need (``api/http/assets``: the H5, the console and the
SDK's modules through the ``assets/sdk`` link) is package data, so a wheel (``pip install .``)
serves them as a checkout does (``api.http.web``)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from api.http.web import ASSETS

ROOT = Path(__file__).resolve().parents[2]


def test_the_assets_are_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["api.http"]
    base = ASSETS.parent
    covered = {p for pattern in patterns for p in base.glob(pattern) if p.is_file()}
    files = {p for p in ASSETS.rglob("*") if p.is_file()}
    assert files, "no assets found"
    assert {p for p in files if p.name.endswith((".html", ".js", ".css"))} <= covered
    assert (ASSETS / "h5" / "index.html") in files and (ASSETS / "ops" / "index.html") in files
    if (ASSETS / "sdk").resolve().is_dir():  # a checkout with the SDK
        assert (ASSETS / "sdk" / "index.js") in covered
