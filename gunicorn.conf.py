"""gunicorn settings for serving loyalty (`gunicorn wsgi:app` reads this file from the current
directory; from elsewhere pass `-c /path/to/gunicorn.conf.py`). Command-line options win."""

# gunicorn answers a request line over its limit (4094 bytes by default) with an HTML page of
# its own. Lift that limit: the app refuses URLs over loyalty.api.MAX_URL_LENGTH (4096 bytes)
# with a 414 application/problem+json answer, as it answers every other error. A reverse
# proxy in front (its own URL limit above the app's) keeps endless request lines out.
limit_request_line = 0
