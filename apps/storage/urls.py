from django.urls import path

from . import views

urlpatterns = [
    path("upload/<str:token>", views.upload, name="storage-upload"),
    path("download/<str:token>", views.download, name="storage-download"),
]
