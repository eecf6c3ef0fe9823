class Stamp:
    """Sets a request attribute and a response header, to prove SSE passes through middleware."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.stamp = "stamped"
        response = self.get_response(request)
        response["X-Stamp"] = "yes"
        return response
