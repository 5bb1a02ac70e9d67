from django.urls import path

from shop import views

urlpatterns = [path("item/<int:pk>", views.item), path("stats", views.stats)]
