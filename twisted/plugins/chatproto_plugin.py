"""Makes ``twistd chat`` (and ``python -m twisted chat``) run the chat server."""

from twisted.application.service import ServiceMaker

chat = ServiceMaker("chat", "chatproto.tap", "Small-group chat server with rooms (chat protocol v1 and v2)", "chat")
