"""Operator review UI and REST API (FastAPI).

Build the app with :func:`inspection.api.app.create_app`; run it with
:func:`inspection.api.server.serve` (blocking) or :func:`inspection.api.server.start_in_thread`
(background, for the demo and the browser tests). Nothing here touches a database, a file or the
network at import time.
"""
