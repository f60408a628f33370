"""WSGI entry point in a checkout: ``gunicorn wsgi:app``. An installed package has the same
app as ``loyalty.wsgi:app``."""

from loyalty import create_app, settle_for_serving

app = create_app()
settle_for_serving()
