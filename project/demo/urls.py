from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("api/trading/", include("project.trading.urls")),
    # With DEBUG on, daphne alone serves the page's static files; in production nginx does.
    *staticfiles_urlpatterns(),
]
