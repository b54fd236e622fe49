from django.contrib import admin
from django.urls import path

from apps.core.health import healthz, readyz
from graphql_schema.views import graphql_view

urlpatterns = [
    path("graphql", graphql_view, name="graphql"),
    path("graphql/", graphql_view),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("admin/", admin.site.urls),
]
