"""Benchmarks of Liudong: ``python -m bench`` (full size) or ``python -m bench --quick``.

Each figure is printed as one JSON object per line (``bench.common.Figure``); ``--markdown``
refreshes the table in ``docs/BENCHMARKS.md``. Not part of the test suite.
"""
