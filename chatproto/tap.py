"""``twistd chat``: command-line options -> the service tree.

The reactor is never imported at module load: twistd (or a test) picks it,
and :func:`makeService` takes it as an argument. Every limit's option, its
default, bound and help text come from :class:`~chatproto.limits.Limits`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.python import usage

from chatproto import __version__, endpoints
from chatproto.codec import ProtocolError
from chatproto.hints import ConnectHints
from chatproto.limits import DEFAULTS, Limits, parse_limit
from chatproto.open_files import OpenFiles
from chatproto.rules import DEFAULT_ROOM, normalise_nick, normalise_room
from chatproto.server import build_server
from chatproto.service import CollectorPace, GracefulExit, heap_trimmer
from chatproto.transports.proxied import PREFIX as PROXIED

DEFAULT_HISTORY = "chat.sqlite3"


def _writable(option: str, path: str) -> None:
    """A file the server will write: its folder exists, and it or the folder is writable."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise usage.UsageError(f"{option} {path!r}: folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK) and not os.access(path, os.W_OK):
        raise usage.UsageError(f"{option} {path!r}: not writable")


def search_index_beside(history: str) -> str:
    """A cluster node's search index when none is named: beside --history,
    named after it (chat-search.sqlite3 for chat.sqlite3), so nodes given
    histories of their own get indexes of their own."""
    if history == ":memory:":
        return history
    stem, ext = os.path.splitext(history)
    return f"{stem}-search{ext or '.sqlite3'}"


def _option_name(f: dataclasses.Field) -> str:
    return f.name.replace("_", "-")


class _Coercer:
    """Parses an option's text as its Limits field's kind, within its bound."""

    coerceDoc = ""  # what usage.Options adds to the option's help: nothing

    def __init__(self, f: dataclasses.Field) -> None:
        self.field = f
        self.what = f"--{_option_name(f)}"

    def __call__(self, text: str) -> float:
        return parse_limit(self.field, text, self.what)


def limit_parameters() -> list[list[Any]]:
    """One twistd option per Limits field."""
    return [
        [_option_name(f), None, getattr(DEFAULTS, f.name), f.metadata["help"], _Coercer(f)]
        for f in dataclasses.fields(Limits)
    ]


#: Options that may be given more than once (a list in a config file).
_REPEATABLE = {"listen", "room", "admin", "web", "web-origin", "irc", "trusted-proxy"}
#: Options that take no value (true or false in a config file).
_FLAGS = {"public", "no-search"}
#: What the server listens on; none named: the defaults of chatproto.endpoints.
_ENDPOINTS = ("listen", "web", "irc")


def _take_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """``--config``'s value, and the arguments without it."""
    rest, path = [], None
    items = iter(argv)
    for arg in items:
        if arg == "--config":
            path = next(items, None)
            if path is None:
                raise usage.UsageError("--config needs a file")
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return path, rest


def config_arguments(path: str, command_line: list[str]) -> list[str]:
    """A TOML file's options as command-line arguments, each checked here so
    that an error names its key; repeatable ones given on the command line
    replace the file's."""
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as e:
        raise usage.UsageError(f"--config {path!r}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise usage.UsageError(f"--config {path!r} is not TOML: {e}") from None
    known = {name for name, *_ in Options.optParameters} | _REPEATABLE | _FLAGS | {"metrics"}
    limits = {_option_name(f): f for f in dataclasses.fields(Limits)}
    given = {arg[2:].split("=", 1)[0] for arg in command_line if arg.startswith("--")}
    arguments = []
    for key, value in table.items():
        name = key.replace("_", "-")
        where = f"{path}: {key}"
        if name not in known or name == "config":
            raise usage.UsageError(f"{where}: no such option (see --help)")
        values = value if isinstance(value, list) and name in _REPEATABLE else [value]
        if name in _REPEATABLE and name in given:
            continue  # the command line's list replaces the file's
        if name in _FLAGS:
            if not isinstance(value, bool):
                raise usage.UsageError(f"{where}: expected true or false, not {value!r}")
            arguments.extend([f"--{name}"] if value else [])
            continue
        for item in values:
            if isinstance(item, (dict, list)) or isinstance(item, bool):
                raise usage.UsageError(f"{where}: expected a string or a number, not {item!r}")
            text = str(item)
            try:
                if name in limits:
                    parse_limit(limits[name], text, key)
                elif name == "admin":
                    normalise_nick(text)
                elif name == "metrics":
                    check_endpoint(endpoints.metrics_endpoint(text), key)
                elif name in ("listen", "web", "irc"):
                    check_endpoint(text, key)
                elif name == "web-origin":
                    check_origin(text, key)
                elif name == "trusted-proxy":
                    check_network(text, key)
            except (ValueError, usage.UsageError) as e:  # a bad limit; a bad endpoint
                raise usage.UsageError(f"{path}: {e}") from None
            except ProtocolError as e:  # a bad admin nick
                raise usage.UsageError(f"{where}: {e.message}") from None
            arguments.append(f"--{name}={text}")
    return arguments


class _ParseOnly:
    """Stands in for a reactor while checking an endpoint string: parsing an
    endpoint only records the reactor, so the real one needn't be imported."""


def check_endpoint(description: str, option: str = "--listen"):
    try:
        return serverFromString(_ParseOnly(), description.removeprefix(PROXIED))
    except Exception as e:  # parsers raise ValueError, KeyError, OpenSSL errors...
        raise usage.UsageError(f"{option} {description!r} is not a usable endpoint: {e}") from None


def check_network(network: str, option: str = "--trusted-proxy") -> str:
    """An address or a network (CIDR), as ``--trusted-proxy`` takes it."""
    try:
        return str(ipaddress.ip_network(network, strict=False))
    except ValueError:
        raise usage.UsageError(
            f"{option} {network!r}: expected an address or a network like 10.0.0.0/8"
        ) from None


def check_origin(origin: str, option: str = "--web-origin") -> str:
    """``scheme://host[:port]``, as a browser sends it in ``Origin``."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise usage.UsageError(f"{option} {origin!r}: expected an origin like https://chat.example.org")
    return origin.rstrip("/")


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "A small-group chat server with rooms, speaking chat protocol versions 1 and 2 "
        "(length-prefixed JSON packets) on one or more Twisted endpoints."
    )
    optFlags = [
        [
            "public",
            None,
            "Listen on every interface, over TLS only: the desktop protocol on 7777, the page "
            "on https://...:8443/, IRC on 6697, with --cert and --key (default: key.pem and "
            "cert.pem beside the history file, made self-signed if neither exists). "
            "Not with --listen, --web or --irc.",
        ],
        [
            "no-search",
            None,
            "Keep no full-text index and answer SEARCH with no_search (an index kept "
            "before is dropped, and built again when search is back).",
        ],
    ]
    optParameters: list[list[Any]] = [
        ["history", None, DEFAULT_HISTORY, "SQLite history file (':memory:' keeps none across restarts)."],
        ["cert", None, None, "With --public: the TLS certificate (PEM) to serve."],
        ["key", None, None, "With --public: the certificate's private key (PEM)."],
        [
            "metrics-token-file",
            None,
            None,
            "A file whose first line is the bearer token /metrics asks for "
            "(Authorization: Bearer TOKEN); without it, /metrics is open to whoever reaches it.",
        ],
        ["name", None, "chat", "Server name sent in WELCOME; {version} becomes the server's version."],
        ["motd", None, "", "Message of the day sent in WELCOME."],
        ["default-room", None, DEFAULT_ROOM, "The room version 1 clients are in; it always exists."],
        [
            "config",
            None,
            None,
            "A TOML file of options (key = value, as the long names here); the command line wins.",
        ],
        [
            "cluster",
            None,
            None,
            "Share the rooms with the other servers on this Redis or Valkey (>= 7): "
            "redis://[:PASSWORD@]HOST[:PORT][/DB], or rediss:// for TLS; or on the primary that "
            "Sentinel knows as NAME, followed through failovers: "
            "sentinel://[:PASSWORD@]HOST[:PORT],HOST[:PORT].../NAME[/DB]; or sharded over a Redis "
            "Cluster, from some of its nodes: redis-cluster://[:PASSWORD@]HOST[:PORT],HOST[:PORT]... "
            "--history is then not used.",
        ],
        [
            "cluster-min-replicas",
            None,
            0,
            "With --cluster: acknowledge a message, and deliver one read from the rooms' streams, only "
            "once this many replicas of the Redis primary have it (WAIT), so that a failover loses none.",
            int,
        ],
        [
            "cluster-expiry",
            None,
            10.0,
            "Seconds after which a cluster node that stopped answering is taken for dead "
            "and its sessions leave their rooms.",
            float,
        ],
        [
            "cluster-retention",
            None,
            100000,
            "Messages each room keeps in a cluster, paged and searched (0: all).",
            int,
        ],
        [
            "files",
            None,
            None,
            "Keep shared files in this folder, served on --web at /files (default: 'files' beside "
            "the history file; 'off' for no files), or an S3-compatible bucket, s3://BUCKET[/PREFIX] "
            "(with --cluster: needed for files; the endpoint and keys from AWS_* variables).",
        ],
        [
            "public-url",
            None,
            None,
            "The address people reach --web at (https://chat.example.org): file links start with it "
            "(default: the first --web endpoint's address).",
        ],
        [
            "search-index",
            None,
            None,
            "With --cluster: this node's own full-text index file (SQLite), fed from the rooms' streams "
            "(default: beside --history, named after it: chat-search.sqlite3).",
        ],
        *limit_parameters(),
    ]

    def parseOptions(self, options=None) -> None:
        """The options of ``--config FILE`` first, then the command line's,
        so the command line wins; both are checked the same way."""
        argv = list(sys.argv[1:] if options is None else options)
        path, argv = _take_config(argv)
        if path is not None:
            self["config"] = path
            argv = config_arguments(path, argv) + argv
        super().parseOptions(argv)

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["rooms"] = []
        self["admins"] = []
        self["metrics"] = None
        self["web"] = []
        self["web-origins"] = []
        self["trusted-proxies"] = []
        self["irc"] = []

    def opt_irc(self, description: str) -> None:
        """Let IRC clients in on this endpoint, e.g. tcp:6667 or
        ssl:6697:privateKey=key.pem (repeatable; default, when no --listen,
        --web or --irc is given: tcp:6667:interface=127.0.0.1)."""
        check_endpoint(description, "--irc")
        self["irc"].append(description)

    def opt_web(self, description: str) -> None:
        """Serve the browser client at / and its WebSocket at /ws on this
        endpoint, e.g. tcp:8080 or ssl:8443:privateKey=key.pem (repeatable;
        default, when no --listen, --web or --irc is given: tcp:8080:interface=127.0.0.1)."""
        check_endpoint(description, "--web")
        self["web"].append(description)

    def opt_web_origin(self, origin: str) -> None:
        """Another page's origin allowed to open the WebSocket, e.g.
        https://chat.example.org (repeatable; the server's own is always allowed)."""
        self["web-origins"].append(check_origin(origin))

    def opt_trusted_proxy(self, network: str) -> None:
        """A reverse proxy in front of --web (an address or a network) whose
        X-Forwarded-For names the browser, e.g. 127.0.0.1 or 10.0.0.0/8
        (repeatable; from anyone else the header is ignored)."""
        self["trusted-proxies"].append(check_network(network))

    def opt_admin(self, account: str) -> None:
        """An account that administers the server: closes rooms, bans, resets
        passwords, sees who is connected (repeatable)."""
        try:
            normalise_nick(account)
        except ProtocolError as e:
            raise usage.UsageError(f"--admin {account!r}: {e.message}") from None
        self["admins"].append(account)

    def opt_metrics(self, description: str) -> None:
        """Serve Prometheus metrics at /metrics and a health check at
        /healthz on this endpoint: a port (9100) or an endpoint string; on
        loopback unless it names an interface (tcp:9100:interface=0.0.0.0)."""
        description = endpoints.metrics_endpoint(description)
        check_endpoint(description, "--metrics")
        self["metrics"] = description

    def opt_room(self, name: str) -> None:
        """A room that always exists, even with nobody in it (repeatable)."""
        self["rooms"].append(name)

    def opt_listen(self, description: str) -> None:
        """Endpoint for the desktop protocol, e.g. tcp:7777 (every interface) or
        ssl:7778:privateKey=key.pem:certKey=cert.pem (repeatable; default
        tcp:7777:interface=127.0.0.1, loopback only)."""
        check_endpoint(description)
        self["listen"].append(description)

    def _metrics_token(self) -> str | None:
        path = self["metrics-token-file"]
        if path is None:
            return None
        try:
            with open(path, encoding="utf-8") as f:
                token = f.readline().strip()
        except OSError as e:
            raise usage.UsageError(f"--metrics-token-file {path!r}: {e.strerror}") from None
        if len(token) < 16:
            raise usage.UsageError(f"--metrics-token-file {path!r}: the token needs 16 characters or more")
        return token

    def postOptions(self) -> None:
        self._endpoints()
        self["metrics-token"] = self._metrics_token()
        self["name"] = self["name"].replace("{version}", __version__)
        try:
            self["limits"] = Limits(**{f.name: self[_option_name(f)] for f in dataclasses.fields(Limits)})
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        for option, name in [("--default-room", self["default-room"])] + [
            ("--room", r) for r in self["rooms"]
        ]:
            try:
                normalise_room(name, self["limits"].room_name_length)
            except ProtocolError as e:
                raise usage.UsageError(f"{option} {name!r}: {e.message}") from None
        if self["cluster"] is not None:
            from chatproto.backends.redis import RedisAddress

            try:
                RedisAddress.parse(self["cluster"])
            except ValueError as e:
                raise usage.UsageError(f"--cluster: {e}") from None
            if not 1 <= self["cluster-expiry"] <= 3600:
                raise usage.UsageError("--cluster-expiry: between 1 and 3600 seconds")
            if self["cluster-retention"] < 0:
                raise usage.UsageError("--cluster-retention: 0 (keep all) or more")
            if not 0 <= self["cluster-min-replicas"] <= 16:
                raise usage.UsageError("--cluster-min-replicas: between 0 and 16")
            files = self["files"]
            if files is not None and files != "off" and not files.startswith("s3://"):
                raise usage.UsageError("--files: a cluster keeps its files in a bucket: s3://BUCKET[/PREFIX]")
            self["files"] = self._bucket(files) if files not in (None, "off") else None
            index = self["search-index"] or search_index_beside(self["history"])
            if not self["no-search"] and index != ":memory:":
                _writable("--search-index", index)
            return  # --history is not used
        history = self["history"]
        if history != ":memory:":
            _writable("--history", history)
        self["files"] = self._files_folder()

    @staticmethod
    def _bucket(url: str) -> str:
        from chatproto.backends.s3_files import parse_bucket

        try:
            parse_bucket(url)
        except ValueError as e:
            raise usage.UsageError(f"--files: {e}") from None
        return url

    def _files_folder(self) -> str | None:
        """``--files``: a folder whose parent exists, None for off."""
        files, history = self["files"], self["history"]
        if files == "off" or (files is None and history == ":memory:"):
            return None
        if files is None:
            files = os.path.join(os.path.dirname(os.path.abspath(history)), "files")
        if files.startswith("s3://"):
            return self._bucket(files)
        parent = os.path.dirname(os.path.abspath(files))
        if not os.path.isdir(parent):
            raise usage.UsageError(f"--files {files!r}: folder {parent!r} does not exist")
        return files

    def _endpoints(self) -> None:
        """The defaults for what was not named: loopback, with the page and
        IRC when no endpoint was named at all; with --public, the TLS files
        (made in makeService, which also names the endpoints)."""
        named = [f"--{name}" for name in _ENDPOINTS if self[name]]
        self["tls-files"] = None
        if self["public"]:
            if named:
                raise usage.UsageError(
                    f"--public chooses the endpoints itself (every interface, TLS): drop {', '.join(named)}"
                )
            self["tls-files"] = self._tls_files()
            return
        if self["cert"] is not None or self["key"] is not None:
            raise usage.UsageError("--cert and --key go with --public (an ssl: endpoint names its own files)")
        self["listen"] = self["listen"] or list(endpoints.LOCAL.listen)
        if not named:
            self["web"], self["irc"] = list(endpoints.LOCAL.web), list(endpoints.LOCAL.irc)

    def _tls_files(self) -> tuple[str, str]:
        """--key and --cert, both or neither (then key.pem and cert.pem beside the history)."""
        key, cert = self["key"], self["cert"]
        if (key is None) != (cert is None):
            raise usage.UsageError("--cert and --key: give both, or neither for a self-signed pair")
        if key is None:
            history = self["history"]
            in_memory = history == ":memory:" or self["cluster"] is not None
            folder = os.getcwd() if in_memory else os.path.dirname(os.path.abspath(history))
            return endpoints.default_files(folder)
        for option, path in (("--key", key), ("--cert", cert)):
            if not os.path.isfile(path):
                raise usage.UsageError(f"{option} {path!r}: no such file")
        return key, cert


# --help shows an option method's docstring as it is: one line, not its indentation.
for _name, _method in vars(Options).items():
    if _name.startswith("opt_") and _method.__doc__:
        _method.__doc__ = " ".join(_method.__doc__.split())


class ServerProcess(MultiService):
    """The top of the tree under twistd or twist: a port that can't be bound
    ends the process with the one-line reason (already logged), exit status 1,
    instead of a traceback."""

    def privilegedStartService(self) -> None:
        self._exit_on_bind_failure(super().privilegedStartService)

    def startService(self) -> None:
        self._exit_on_bind_failure(super().startService)

    @staticmethod
    def _exit_on_bind_failure(start: Callable[[], None]) -> None:
        try:
            start()
        except CannotListenError as e:
            raise SystemExit(f"chat: {e}") from None


def public_endpoints(config: Options) -> tuple[endpoints.Endpoints, endpoints.Certificate | None]:
    """With --public, its TLS certificate (made self-signed if there is none
    yet) and the endpoints that serve it; otherwise the options' endpoints."""
    if config["tls-files"] is None:
        return endpoints.Endpoints(config["listen"], config["web"], config["irc"]), None
    try:
        certificate = endpoints.certificate(*config["tls-files"])
    except (OSError, ValueError) as e:
        raise SystemExit(f"chat: --public: {e}") from None
    return endpoints.public(certificate), certificate


def makeService(config: Options, reactor=None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    top = ServerProcess()
    where, certificate = public_endpoints(config)
    server = build_server(
        reactor,
        listen=where.listen,
        history=config["history"],
        limits=config["limits"],
        name=config["name"],
        motd=config["motd"],
        default_room=config["default-room"],
        rooms=config["rooms"],
        metrics=config["metrics"],
        metrics_token=config["metrics-token"],
        admins=config["admins"],
        web=where.web,
        web_origins=config["web-origins"],
        trusted_proxies=config["trusted-proxies"],
        irc=where.irc,
        cluster=config["cluster"],
        cluster_expiry=config["cluster-expiry"],
        cluster_retention=config["cluster-retention"],
        cluster_min_replicas=config["cluster-min-replicas"],
        files=config["files"],
        public_url=config["public-url"],
        search=not config["no-search"],
        search_index=config["search-index"] or search_index_beside(config["history"]),
    )
    server.setServiceParent(top)
    OpenFiles(config["limits"].max_clients).setServiceParent(top)  # before the first accept
    ConnectHints(server, certificate).setServiceParent(top)
    GracefulExit(reactor).setServiceParent(top)
    CollectorPace().setServiceParent(top)
    trimmer = heap_trimmer(reactor)
    if trimmer is not None:
        trimmer.setServiceParent(top)
    return top
