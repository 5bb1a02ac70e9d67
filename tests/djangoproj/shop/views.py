from django.db import connection
from django.http import HttpResponse, JsonResponse

from .models import Item


def item(request, pk):  # type: ignore[no-untyped-def]
    it = Item.objects.get(pk=pk)
    return HttpResponse(f"{it.name}:{it.qty}")


def stats(request):  # type: ignore[no-untyped-def]
    s = connection.pool.stats()
    return JsonResponse({"open": s.open, "in_use": s.in_use, "max_open": s.max_open,
                         "waiting": s.waiting, "timeouts": s.timeouts})
