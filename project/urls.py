from django.contrib import admin
from django.urls import include, path
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from project.routing import api
from realtime.asyncapi import asyncapi_view
from realtime.login import LOGIN_THROTTLES
from realtime.views import LogoutView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/auth/token/", TokenObtainPairView.as_view(throttle_classes=LOGIN_THROTTLES), name="token_obtain_pair"),
    path("api/auth/token/refresh/", TokenRefreshView.as_view(), name="token_refresh"),
    path("api/auth/logout/", LogoutView.as_view(), name="logout"),
    path("api/asyncapi.json", asyncapi_view, name="asyncapi"),
    path("api/realtime/", include("realtime.publish_api")),  # POST publish, publish/batch with an API key
    path("", include(api.urls)),  # the SSE endpoints of the same routers CoreApp serves
    path("", include("project.demo.urls")),
]
