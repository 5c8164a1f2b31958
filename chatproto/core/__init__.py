"""The core: sessions, rooms, each room's order, history and limits. It knows no
transport (each speaks to it through :mod:`chatproto.core.connection`) and no
backend (it sees an :class:`~chatproto.backends.eventlog.EventLog`)."""
