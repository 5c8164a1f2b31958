"""Makes ``twistd chat`` (and ``python -m twisted chat``) run the chat server."""

from twisted.application.service import ServiceMaker

chat = ServiceMaker("chat", "chatproto.tap", "Small-group chat server with rooms (protocol v1, v2)", "chat")
