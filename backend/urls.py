from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from apps.trends.views import trend_media
from backend.health import healthz, readyz
from backend.landing import api_landing, schema_file
from graphql_schema.views import graphql_view
from rest_api.api import api as rest_api

urlpatterns = [
    path("", api_landing, name="api-landing"),  # admin's "View site"
    path("schema.graphql", schema_file, name="schema-file"),
    path("graphql", graphql_view, name="graphql"),
    path("graphql/", graphql_view),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path(settings.TRENDS_MEDIA_URL.lstrip("/") + "<path:path>", trend_media, name="trend-media"),
    path("storage/", include("apps.storage.urls")),  # signed upload/download URLs (embedded mode)
    path("webhooks/", include("apps.purchases.urls")),  # the stores' server notifications
    path("v1/", rest_api.urls),  # the business REST API (rest_api/), OpenAPI at /v1/openapi.json
]

if settings.METRICS_ENDPOINT:  # Prometheus (backend/metrics.py): a bearer token in production
    from backend.metrics import metrics_view

    urlpatterns.append(path("metrics", metrics_view, name="metrics"))

if settings.BENCH_ENDPOINTS:  # bench/http_me.py compares GraphQL with a plain Django view
    from backend.bench_views import bench_me

    urlpatterns.append(path("bench/me", bench_me))
