"""ASGI entry point for ``liudong serve`` (settings from the environment)."""

from api.app import create_app

app = create_app()
