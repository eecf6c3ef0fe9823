"""ASGI entry point: ``daphne project.asgi:application``."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()  # sets Django up before the routers import any model

from project.routing import api  # noqa: E402
from realtime import CoreApp  # noqa: E402

application = CoreApp(routers=[api], http_app=django_http)
