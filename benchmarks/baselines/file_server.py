"""Baseline: the least twisted.web needs to take files in and give them back.

``POST /files`` streams the request's body into a new file of FOLDER as it
arrives (a ``Request`` whose body goes to that file instead of Twisted's
buffer) and answers its name; ``GET /static/<name>`` is ``static.File`` on
FOLDER. No token, no hashing, no record, no sync to disk, no limits: what
our ``/files`` adds is measured against this.

    python -m benchmarks.baselines.file_server PORT FOLDER
"""

import itertools
import json
import os
import sys

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.static import File

_names = itertools.count(1)


class StreamingRequest(Request):
    """A POST's body written to its file piece by piece, never held whole."""

    folder = ""
    target = None

    def gotLength(self, length):
        if self.channel._command != b"POST":
            super().gotLength(length)
            return
        self.upload_name = f"{next(_names)}.bin"
        self.target = open(os.path.join(self.folder, self.upload_name), "wb")
        self.content = open(os.devnull, "rb")  # nothing for Twisted to parse as a form

    def handleContentChunk(self, data):
        if self.target is None:
            super().handleContentChunk(data)
        else:
            self.target.write(data)

    def connectionLost(self, reason):
        if self.target is not None:
            self.target.close()
        super().connectionLost(reason)


class Uploads(Resource):
    isLeaf = True

    def render_POST(self, request):
        size = request.target.tell()
        request.target.close()
        request.target = None
        request.setResponseCode(201)
        request.setHeader("content-type", "application/json")
        return json.dumps({"id": request.upload_name, "size": size}).encode()


if __name__ == "__main__":
    folder = os.path.abspath(sys.argv[2])
    StreamingRequest.folder = folder
    root = Resource()
    root.putChild(b"files", Uploads())
    root.putChild(b"static", File(folder))
    site = Site(root, requestFactory=StreamingRequest)
    port = reactor.listenTCP(int(sys.argv[1]), site, interface="127.0.0.1", backlog=4096)
    print(f"listening on {port.getHost().port}", flush=True)
    reactor.run()
