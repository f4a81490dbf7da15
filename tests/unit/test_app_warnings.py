"""Building the app emits no warning: no Litestar deprecation (every path, query and header
parameter, body and dependency is declared with an explicit marker, as Litestar 3 requires),
nor any other. A fresh interpreter imports the app with every warning an error, so a warning
raised at import time (``Parameter(header=...)``…) fails too."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BUILD = textwrap.dedent(
    """
    import warnings
    warnings.simplefilter("error")

    from api.bootstrap.settings import Settings
    from api.http.app import create_app

    settings = Settings(
        env="test",
        database_url="postgresql://nobody@127.0.0.1:1/none",
        nats_url="nats://127.0.0.1:1",
    )
    app = create_app(settings)
    document = app.openapi_schema.to_schema()
    assert document["paths"], "no operation in the OpenAPI document"
    print("built")
    """
)


def test_building_the_app_and_its_openapi_document_emits_no_warning() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", BUILD],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == "built"
    assert "Warning" not in result.stderr, result.stderr[-4000:]
