"""python manage.py realtime_asyncapi [-o asyncapi.json]: the AsyncAPI 3.0 document of the routers."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand

from realtime.asyncapi import build_document


class Command(BaseCommand):
    help = "Print (or write with -o) the AsyncAPI 3.0 document of the project's WebSocket and SSE endpoints."

    def add_arguments(self, parser):
        parser.add_argument("-o", "--output", help="Write the document to this file instead of printing it")
        parser.add_argument("--host", default="localhost:8000", help="The servers' host[:port] (localhost:8000)")
        parser.add_argument("--secure", action="store_true", help="wss:// and https:// servers")
        parser.add_argument("--title", default="Real-time API", help="info.title")
        parser.add_argument("--api-version", default="1.0.0", help="info.version, the API's own version")

    def handle(self, output=None, host="localhost:8000", secure=False, title="Real-time API",
               api_version="1.0.0", **options):
        document = build_document(title=title, version=api_version, host=host, secure=secure)
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        if output:
            Path(output).write_text(text, encoding="utf-8")
            self.stderr.write(f"Wrote {len(document['channels'])} channels to {output}")
        else:
            self.stdout.write(text, ending="")
