"""The studio: a web page and a REST API over anyseg's predictors (``anyseg serve``).

:func:`create_app` builds the FastAPI application; :class:`ServerSettings` says which model to
serve, where to keep projects and what to accept.
"""

from anyseg.server.app import ServerSettings, create_app

__all__ = ["ServerSettings", "create_app"]
