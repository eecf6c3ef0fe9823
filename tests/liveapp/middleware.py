from django.utils.deprecation import MiddlewareMixin


class Stamp(MiddlewareMixin):
    """Sets a request attribute and a response header, to prove SSE passes through middleware.

    Sync and async capable like Django's own middleware, so the stack stays fully async as in the demo
    project (a sync-only middleware would run every request through a thread of its own).
    """

    def process_request(self, request):
        request.stamp = "stamped"

    def process_response(self, request, response):
        response["X-Stamp"] = "yes"
        return response
