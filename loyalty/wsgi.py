"""WSGI entry point for an installed package: ``gunicorn loyalty.wsgi:app`` (``loyalty serve``
runs it with granian)."""

from loyalty import create_app, settle_for_serving

app = create_app()
settle_for_serving()
