"""The shelf read model: readers, books and loans as the mini-program lists them.

Written only by ``ShelfProjection`` (from the Library log); read only through
``ShelfQueries`` (views in schema ``shelf``). No read touches an aggregate.
"""

from projections.shelf.projection import DDL, ShelfPage, ShelfProjection
from projections.shelf.queries import ShelfQueries

__all__ = ["DDL", "ShelfPage", "ShelfProjection", "ShelfQueries"]
