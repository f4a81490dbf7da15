"""One module per scenario, each with ``run(ctx: bench.__main__.Context) -> None``."""
