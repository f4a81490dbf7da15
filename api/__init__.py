"""Liudong's composition root: settings, adapters, the Litestar app and the ``liudong`` CLI."""
