"""ASGI entry point for ``liudong serve`` (settings from the environment)."""

from api.http.app import create_app

app = create_app()
