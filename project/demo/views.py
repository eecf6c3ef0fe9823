from django.shortcuts import render

from project.trading.market import SYMBOLS


def index(request):
    """The trading demo: everything happens in the browser, over /api (JWT, WebSocket, SSE)."""
    return render(request, "demo/index.html", {"symbols": list(SYMBOLS)})
