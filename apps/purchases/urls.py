from django.urls import path

from . import views

urlpatterns = [
    path("app-store", views.app_store_notification, name="webhook-app-store"),
    path("google-play", views.google_play_notification, name="webhook-google-play"),
    path("local-test-store", views.local_test_store_notification, name="webhook-local-test-store"),
]
