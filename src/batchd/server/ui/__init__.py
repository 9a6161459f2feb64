"""The web dashboard at ``/ui``: static files plus two small JSON helpers.

``static/``  index.html, app.js, app.css: vanilla, no build step, nothing fetched
             from elsewhere; the page calls the ``/v1`` API with the user's key
``views``    a batch's progress, ETA and cost, computed as ``batchd status`` does
``errors``   a batch's failed lines counted by error code
``routes``   ``/ui`` (the page) and ``/ui/api/...`` (tenant-scoped, key required)
"""

from batchd.server.ui.routes import router

__all__ = ["router"]
