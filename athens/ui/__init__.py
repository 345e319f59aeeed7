"""The built-in query page (static files served by athens/router/app.py)."""
