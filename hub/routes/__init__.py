"""HTTP routes: the REST API under /v1 and the original wire protocol under /api."""
