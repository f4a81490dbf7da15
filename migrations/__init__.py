"""Reviewable SQL migrations, applied in file-name order by yoyo (``liudong migrate``).

Read-model tables are not here: each projection owns the DDL of its versioned schema
(``projections/sql/``) because a rebuild creates a new version of them.
"""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).parent
