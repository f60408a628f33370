"""WSGI entry point for an installed package: ``gunicorn loyalty.wsgi:app``."""

from loyalty import create_app

app = create_app()
