"""The trading demo's plain HTTP endpoints (included under /api/trading/ by project/demo/urls.py)."""

from django.urls import path

from .views import MeView, OrderView

urlpatterns = [
    path("orders", OrderView.as_view(), name="trading-orders"),
    path("me", MeView.as_view(), name="trading-me"),
]
