"""Liudong's outer layer, by role:

- ``api.http``: the Litestar app, controllers, schemas, errors, auth, idempotency, time travel;
- ``api.cli``: the ``liudong`` command line, one module per command group;
- ``api.adapters``: the outside world (WeChat, session store, ISBN catalog, event-log export);
- ``api.bootstrap``: the composition root (settings, container, runtime, embedded servers, db).

``http`` and ``cli`` are entry points; both build on ``bootstrap``, which builds the adapters.
The import-linter contracts in ``pyproject.toml`` keep these arrows one way.
"""
