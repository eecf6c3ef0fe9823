"""The project's one declaration of real-time endpoints: every app's ``routing.router`` under /api."""

from realtime import AutoRouter

api = AutoRouter(prefix="/api")
api.autodiscover()
