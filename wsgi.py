"""WSGI entry point in a checkout: ``gunicorn wsgi:app``. An installed package has the same
app as ``loyalty.wsgi:app``."""

from loyalty import create_app

app = create_app()
