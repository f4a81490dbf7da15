"""Liudong's domain: aggregates, commands, domain events and the eventsourcing Applications.

This package imports nothing of ours and no I/O library: only the standard library,
``eventsourcing`` and ``msgspec`` (enforced by ``tests/unit/test_architecture.py``).
"""
