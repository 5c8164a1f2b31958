"""``twistd chat`` options and the service tree they build."""

import os
import stat

from twisted.application.service import IService
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from chatproto import certs
from chatproto.hints import ConnectHints, hint
from chatproto.service import CollectorPace, HubService, ListenerService, PeersService
from chatproto.tap import Options, makeService


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class OptionsTests(SynchronousTestCase):
    def test_defaults(self):
        options = parse()
        self.assertEqual(options["listen"], ["tcp:7777:interface=127.0.0.1"], "loopback only")
        self.assertEqual(options["web"], ["tcp:8080:interface=127.0.0.1"])
        self.assertEqual(options["irc"], ["tcp:6667:interface=127.0.0.1"])
        self.assertEqual(options["history"], "chat.sqlite3")
        limits = options["limits"]
        self.assertEqual(
            (limits.max_clients, limits.max_frame, limits.rate, limits.burst, limits.sendq),
            (10000, 65536, 20, 40, 1048576),
        )
        self.assertEqual((limits.login_timeout, limits.ping_interval, limits.idle_timeout), (10, 30, 90))
        self.assertEqual(limits.history_replay, 50)

    def test_values(self):
        options = parse(
            "--listen",
            "tcp:0",
            "--listen",
            "unix:/tmp/chat.sock",
            "--rate",
            "2.5",
            "--burst",
            "5",
            "--max-clients",
            "3",
            "--history",
            ":memory:",
        )
        self.assertEqual(options["listen"], ["tcp:0", "unix:/tmp/chat.sock"])
        self.assertEqual((options["limits"].rate, options["limits"].burst), (2.5, 5))

    def test_bad_values_are_one_line_usage_errors(self):
        for args in (
            ["--max-clients", "-1"],
            ["--max-clients", "lots"],
            ["--rate", "0"],
            ["--rate", "nan"],
            ["--max-frame", "100"],
            ["--login-timeout", "-5"],
            ["--ping-interval", "100", "--idle-timeout", "90"],
            ["--listen", "tcp:notaport"],
            ["--listen", "bogus:1"],
            ["--listen", "ssl:7778:privateKey=/nonexistent.pem"],
            ["--history", "/nonexistent/dir/chat.sqlite3"],
            ["--room", "two words"],
            ["--default-room", "#general"],
            ["--room", "x" * 40],
            ["--rooms-per-connection", "0"],
            ["--web", "tcp:notaport"],
            ["--web-origin", "chat.example.org"],
            ["--web-origin", "ftp://chat.example.org"],
            ["--web-origin", "https://chat.example.org/path"],
        ):
            with self.assertRaises(usage.UsageError, msg=args) as caught:
                parse(*args)
            self.assertNotIn("\n", str(caught.exception))
            self.assertTrue(str(caught.exception))

    def test_metrics_on_loopback_unless_told_and_a_token_from_a_file(self):
        self.assertEqual(parse("--metrics", "9100")["metrics"], "tcp:9100:interface=127.0.0.1")
        self.assertEqual(parse("--metrics", "tcp:9100")["metrics"], "tcp:9100:interface=127.0.0.1")
        wide = parse("--metrics", "tcp:9100:interface=0.0.0.0")
        self.assertEqual((wide["metrics"], wide["metrics-token"]), ("tcp:9100:interface=0.0.0.0", None))
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("x" * 32 + "\n")
        self.assertEqual(parse("--metrics", "9100", "--metrics-token-file", path)["metrics-token"], "x" * 32)
        with open(path, "w") as f:
            f.write("short\n")
        for args in (["--metrics-token-file", path], ["--metrics-token-file", "/nonexistent/token"]):
            with self.assertRaises(usage.UsageError, msg=args):
                parse(*args)

    def test_make_service(self):
        options = parse("--listen", "tcp:0:interface=127.0.0.1", "--history", ":memory:", "--name", "n")
        service = makeService(options, reactor=Clock())
        server = next(iter(IService(service)))
        children = list(server)
        # MultiService stops its children last to first: the peers after the hub, the hub after the listeners
        self.assertIsInstance(children[0], PeersService)
        self.assertIsInstance(children[1], HubService, "the hub stops after the listeners")
        self.assertIsInstance(children[2], ListenerService)
        self.assertEqual(server.hub.name, "n")
        self.assertEqual(
            sum(isinstance(s, CollectorPace) for s in IService(service)), 1, "the collector paced"
        )

    def test_web_endpoints_and_origins(self):
        options = parse(
            "--history",
            ":memory:",
            "--web",
            "tcp:0:interface=127.0.0.1",
            "--web",
            "tcp:0:interface=127.0.0.2",
            "--web-origin",
            "https://chat.example.org/",
        )
        self.assertEqual(options["web"], ["tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.2"])
        self.assertEqual(options["web-origins"], ["https://chat.example.org"])
        server = next(iter(IService(makeService(options, reactor=Clock()))))
        web = [s for s in server.listeners if s.factory is not server.factory]
        self.assertEqual(len(web), 2, "one listener per --web, beside --listen's")
        resource = web[0].factory.resource.children[b"ws"]
        self.assertEqual(resource.origins, frozenset({"https://chat.example.org"}))

    def test_rooms_that_always_exist(self):
        options = parse(
            "--history", ":memory:", "--default-room", "Lounge", "--room", "help", "--room", "news"
        )
        server = next(iter(IService(makeService(options, reactor=Clock()))))
        self.assertEqual([room.name for room in server.hub.rooms], ["Lounge", "help", "news"])
        self.assertEqual(server.hub.default_room.name, "Lounge")
        self.assertTrue(all(room.permanent for room in server.hub.rooms))

    def test_every_limit_is_an_option_with_its_default_and_help(self):
        import dataclasses

        from chatproto.limits import DEFAULTS, Limits

        options = Options()
        help_text = str(options)
        for f in dataclasses.fields(Limits):
            name = f.name.replace("_", "-")
            self.assertEqual(options[name], getattr(DEFAULTS, f.name), name)
            self.assertIn(f"--{name}=", help_text)
            self.assertIn(f.metadata["help"][:30], help_text.replace("\n", " "))


class Endpoints(SynchronousTestCase):
    """Loopback unless told; --public: every interface, TLS only."""

    def services(self, *args: str):
        top = makeService(parse(*args), reactor=Clock())
        server = next(s for s in top if hasattr(s, "listeners"))
        hints = next(s for s in top if isinstance(s, ConnectHints))
        return server, hints

    def test_naming_any_endpoint_serves_exactly_what_is_named(self):
        only_chat = parse("--listen", "tcp:7000")
        self.assertEqual((only_chat["listen"], only_chat["web"], only_chat["irc"]), (["tcp:7000"], [], []))
        only_web = parse("--web", "tcp:9000:interface=127.0.0.1")
        self.assertEqual(only_web["listen"], ["tcp:7777:interface=127.0.0.1"], "the chat port always")
        self.assertEqual(only_web["irc"], [])

    def test_the_default_server_has_all_three_on_loopback(self):
        server, _ = self.services("--history", ":memory:")
        kinds = {server.factory: "chat", server.site: "web", server.gateway: "irc"}
        self.assertEqual(
            [(kinds[listener.factory], listener.description) for listener in server.listeners],
            [
                ("chat", "tcp:7777:interface=127.0.0.1"),
                ("web", "tcp:8080:interface=127.0.0.1"),
                ("irc", "tcp:6667:interface=127.0.0.1"),
            ],
        )

    def test_public_makes_a_self_signed_pair_once_and_listens_everywhere_over_tls(self):
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        history = os.path.join(folder, "chat.sqlite3")
        server, hints = self.services("--public", "--history", history)
        key, cert = os.path.join(folder, "key.pem"), os.path.join(folder, "cert.pem")
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600, "the key is the owner's only")
        for listener, port in zip(server.listeners, (7777, 8443, 6697), strict=True):
            self.assertTrue(listener.description.startswith(f"ssl:{port}:privateKey="), listener.description)
            self.assertNotIn("interface=", listener.description, "every interface")
        with open(cert, "rb") as f:
            fingerprint = certs.fingerprint(f.read())
        self.assertEqual(hints.certificate.fingerprint, fingerprint)
        self.assertTrue(hints.certificate.made)
        _, again = self.services("--public", "--history", history)
        self.assertEqual(again.certificate.fingerprint, fingerprint, "the same pair next time")
        self.assertFalse(again.certificate.made)

    def test_public_serves_the_given_pair(self):
        folder = self.mktemp()
        key, cert, cert_pem = certs.write_pair(folder)
        server, hints = self.services("--public", "--history", ":memory:", "--key", key, "--cert", cert)
        self.assertIn(f"certKey={cert}", server.listeners[0].description)
        self.assertEqual(hints.certificate.fingerprint, certs.fingerprint(cert_pem))
        self.assertFalse(hints.certificate.made)

    def test_a_key_without_its_certificate_ends_the_start_with_one_line(self):
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        with open(os.path.join(folder, "key.pem"), "w") as f:
            f.write("someone else's key")
        options = parse("--public", "--history", os.path.join(folder, "chat.sqlite3"))
        with self.assertRaises(SystemExit) as caught:
            makeService(options, reactor=Clock())
        self.assertIn("key.pem' exists but", str(caught.exception.code))
        self.assertEqual(os.listdir(folder), ["key.pem"], "nothing overwritten, nothing made")

    def test_public_mistakes_are_one_line_each(self):
        folder = self.mktemp()
        key, cert, _ = certs.write_pair(folder)
        for args, said in (
            (["--public", "--listen", "tcp:7777"], "--public chooses the endpoints itself"),
            (["--public", "--irc", "tcp:6667"], "drop --irc"),
            (["--public", "--key", key], "give both, or neither"),
            (["--public", "--key", key, "--cert", "/nonexistent.pem"], "--cert '/nonexistent.pem'"),
            (["--cert", cert, "--key", key], "--cert and --key go with --public"),
        ):
            with self.assertRaises(usage.UsageError, msg=args) as caught:
                parse(*args)
            self.assertIn(said, str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))

    def test_public_in_a_config_file(self):
        path = self.mktemp() + ".toml"
        with open(path, "w") as f:
            f.write('public = true\nhistory = ":memory:"\n')
        self.assertTrue(parse("--config", path)["public"])
        with open(path, "w") as f:
            f.write('public = "yes"\n')
        with self.assertRaises(usage.UsageError) as caught:
            parse("--config", path)
        self.assertIn("expected true or false", str(caught.exception))

    def test_no_search_on_the_command_line_and_in_a_config_file(self):
        server, _ = self.services("--history", ":memory:", "--listen", "tcp:0")
        self.assertIsNotNone(server.hub.eventlog.search_key())
        server, _ = self.services("--history", ":memory:", "--listen", "tcp:0", "--no-search")
        self.assertIsNone(server.hub.eventlog.search_key(), "SEARCH answers no_search")
        path = self.mktemp() + ".toml"
        with open(path, "w") as f:
            f.write('no_search = true\nhistory = ":memory:"\n')
        self.assertTrue(parse("--config", path)["no-search"])
        from chatproto.tap import search_index_beside

        self.assertEqual(search_index_beside("chat.sqlite3"), "chat-search.sqlite3")
        self.assertEqual(search_index_beside("/var/lib/chat/node.db"), "/var/lib/chat/node-search.db")
        self.assertEqual(search_index_beside(":memory:"), ":memory:")


class Hints(SynchronousTestCase):
    """What the server says about how to reach it (chatproto.hints)."""

    def test_a_line_per_kind_of_client(self):
        self.assertEqual(hint("web", "127.0.0.1", 8080, False), "browser: open http://127.0.0.1:8080/")
        self.assertEqual(hint("irc", "127.0.0.1", 6667, False), "IRC: irssi -c 127.0.0.1 -p 6667")
        self.assertEqual(
            hint("chat", "127.0.0.1", 7777, False),
            'desktop client: make client ARGS="--connect 127.0.0.1:7777 --nick NAME"',
        )

    def test_over_tls_the_lines_say_to_check_the_fingerprint(self):
        self.assertIn("https://chat.example:8443/", hint("web", "chat.example", 8443, True, "AA:BB"))
        self.assertIn(
            "/connect -tls -tls_pinned_cert AA:BB chat.example 6697",
            hint("irc", "chat.example", 6697, True, "AA:BB"),
        )
        self.assertIn("with TLS", hint("chat", "chat.example", 7777, True, "AA:BB"))


class ConfigFile(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = self.mktemp() + ".toml"
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_a_good_file_and_the_command_line_wins(self):
        path = self.write(
            'listen = ["tcp:0:interface=127.0.0.1", "unix:/tmp/chat-config.sock"]\n'
            'history = ":memory:"\nrate = 5\nburst = 7\nmotd = "from the file"\n'
            'room = ["help", "news"]\nmetrics = "tcp:9100:interface=127.0.0.1"\n'
            'web = ["tcp:8080:interface=127.0.0.1"]\nweb_origin = ["https://chat.example.org"]\n'
        )
        options = parse("--config", path, "--rate", "9", "--room", "ops")
        self.assertEqual(options["listen"], ["tcp:0:interface=127.0.0.1", "unix:/tmp/chat-config.sock"])
        self.assertEqual((options["limits"].rate, options["limits"].burst), (9, 7))
        self.assertEqual(options["motd"], "from the file")
        self.assertEqual(options["rooms"], ["ops"], "a list on the command line replaces the file's")
        self.assertEqual(options["metrics"], "tcp:9100:interface=127.0.0.1")
        self.assertEqual(
            (options["web"], options["web-origins"]),
            (["tcp:8080:interface=127.0.0.1"], ["https://chat.example.org"]),
        )
        self.assertEqual(parse(f"--config={path}")["rooms"], ["help", "news"])

    def test_a_bad_key_a_bad_value_and_a_bad_file_are_one_line_each(self):
        for text, said in (
            ("rat = 5\n", "rat: no such option"),
            ("rate = 0\n", "rate must be greater than 0"),
            ('listen = "nonsense:endpoint"\n', "listen 'nonsense:endpoint' is not a usable endpoint"),
            ("rate = [1, 2]\n", "rate: expected a string or a number"),
            ("rate = \n", "is not TOML"),
            ('web_origin = "chat.example.org"\n', "expected an origin"),
        ):
            path = self.write(text)
            with self.assertRaises(usage.UsageError, msg=text) as caught:
                parse("--config", path)
            message = str(caught.exception)
            self.assertIn(said, message)
            self.assertIn(path, message)
            self.assertNotIn("\n", message)
        with self.assertRaises(usage.UsageError) as caught:
            parse("--config", "/nonexistent/chat.toml")
        self.assertIn("No such file", str(caught.exception))


class Contrib(SynchronousTestCase):
    """The sample service files stay usable."""

    def test_the_sample_config_parses(self):
        import os

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        options = parse("--config", os.path.join(root, "contrib", "chat.toml"), "--history", ":memory:")
        self.assertEqual(options["listen"], ["tcp:7777"])
        self.assertEqual(options["metrics"], "tcp:9100:interface=127.0.0.1")

    def test_the_unit_runs_twistd_sandboxed_as_its_own_user(self):
        import os

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(root, "contrib", "chat.service")) as f:
            unit = f.read()
        for line in (
            "User=chat",
            "StateDirectory=chat",
            "EnvironmentFile=-/etc/default/chat",
            "Restart=on-failure",
            "ProtectSystem=strict",
            "NoNewPrivileges=true",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        ):
            self.assertIn(f"\n{line}\n", unit)
        self.assertIn("twistd --nodaemon", unit)
        self.assertIn("--config /etc/chat.toml", unit)
