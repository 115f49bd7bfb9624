"""The tenant portal: server-rendered pages under /portal, served by the API process (see routes.py)."""
