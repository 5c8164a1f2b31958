"""Where each room's messages get their order and are kept: one interface
(:mod:`chatproto.backends.eventlog`), an embedded SQLite implementation."""
