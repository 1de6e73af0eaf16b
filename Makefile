# Couplet - build, run, test.  `make run` starts the server on its embedded defaults;
# `make test` builds everything (plain and with ASan+UBSan) and runs every test.

CC      ?= cc
BUILD   ?= build
CFLAGS  ?= -O2 -g
WARN     = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
SAN_FLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDLIBS   = -lssl -lcrypto

CORE_SRCS = net_epoll.c xml.c server.c router.c stanza.c auth.c muc.c jid.c precis.c config.c log.c store.c admin.c archive.c mam.c
CORE_OBJS = $(CORE_SRCS:%.c=$(BUILD)/%.o)
TEST_SRCS = $(wildcard tests/test_*.c)
TEST_BINS = $(TEST_SRCS:tests/%.c=$(BUILD)/%)
HEADERS   = $(wildcard *.h)
TEST_HEADERS = $(HEADERS) $(wildcard tests/*.h)

.PHONY: all run test asan unit specs clean valgrind

all: $(BUILD)/couplet $(BUILD)/scs_runner $(TEST_BINS)

$(BUILD)/%.o: %.c $(HEADERS) | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -c $< -o $@

$(BUILD)/couplet: $(BUILD)/main.o $(CORE_OBJS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/scs_runner: tests/scs_runner.c $(CORE_OBJS) $(TEST_HEADERS)
	$(CC) $(WARN) $(CFLAGS) -I. -o $@ tests/scs_runner.c $(CORE_OBJS) $(LDLIBS)

$(BUILD)/test_%: tests/test_%.c $(CORE_OBJS) $(TEST_HEADERS)
	$(CC) $(WARN) $(CFLAGS) -I. -o $@ $< $(CORE_OBJS) $(LDLIBS)

# the router's tests run the whole server over fuzz/fake_net.c, an in-memory net_epoll: no sockets
ROUTER_TEST_OBJS = $(filter-out $(BUILD)/net_epoll.o,$(CORE_OBJS))
$(BUILD)/test_router: tests/test_router.c fuzz/fake_net.c fuzz/fake_net.h $(ROUTER_TEST_OBJS) $(TEST_HEADERS)
	$(CC) $(WARN) $(CFLAGS) -I. -o $@ tests/test_router.c fuzz/fake_net.c $(ROUTER_TEST_OBJS) $(LDLIBS)

$(BUILD):
	mkdir -p $(BUILD)

# The libstrophe client of the interoperability matrix (tests/interop.sh builds it on demand); only where
# pkg-config finds libstrophe (Debian's libstrophe-dev), otherwise that column is reported as not run.
$(BUILD)/interop_strophe: tests/interop_strophe.c | $(BUILD)
	@if pkg-config --exists libstrophe; then \
	  echo "$(CC) ... -o $@ tests/interop_strophe.c `pkg-config --libs libstrophe`"; \
	  $(CC) $(WARN) $(CFLAGS) `pkg-config --cflags libstrophe` -o $@ tests/interop_strophe.c `pkg-config --libs libstrophe`; \
	else echo "libstrophe not found by pkg-config: $@ not built"; fi

couplet: $(BUILD)/couplet
	cp $(BUILD)/couplet couplet

# ---- install: the binary, the manual page, the example configuration, the systemd unit ----
# `make install PREFIX=/usr DESTDIR=/tmp/stage`; the unit's ExecStart follows PREFIX.
PREFIX  ?= /usr/local
DESTDIR ?=
.PHONY: install
install: $(BUILD)/couplet
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/share/man/man8 \
	  $(DESTDIR)$(PREFIX)/share/doc/couplet $(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 0755 $(BUILD)/couplet $(DESTDIR)$(PREFIX)/sbin/couplet
	install -m 0644 couplet.8 $(DESTDIR)$(PREFIX)/share/man/man8/couplet.8
	install -m 0644 couplet.conf.example $(DESTDIR)$(PREFIX)/share/doc/couplet/couplet.conf.example
	sed 's|/usr/local/|$(PREFIX)/|g' contrib/couplet.service >$(DESTDIR)$(PREFIX)/lib/systemd/system/couplet.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/couplet.service
# ---- end of install ----

# Start the server on its embedded defaults (localhost, ports 5222/5223, data in ./data).
run: $(BUILD)/couplet
	./$(BUILD)/couplet

asan:
	$(MAKE) BUILD=build/asan CFLAGS="$(SAN_FLAGS)" all

# Every test, plain and sanitized; the last line is "N passed, M failed".
test: all asan
	sh tests/run.sh build build/asan

valgrind: all
	sh tests/run.sh --valgrind build

clean:
	rm -rf build couplet

# ---- fuzz (libFuzzer; needs clang) -----------------------------------------------------------------
# `make fuzz-smoke` builds every harness into build/fuzz/ and runs each for FUZZ_SECONDS (default 10) on a
# copy of its corpus (and first on the saved reproducers in fuzz/regressions/); `make fuzz` runs each for
# FUZZ_SECONDS (default 300). Either exits non-zero if a harness crashes. See fuzz/README.md.
FUZZ_CC      ?= clang
FUZZ_DIR      = build/fuzz
FUZZ_FLAGS    = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter -g -O1 -I. \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_NAMES   ?= xml jid sasl stream admin precis archive
FUZZ_BINS     = $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_STREAM_SRCS = server.c router.c stanza.c xml.c auth.c muc.c jid.c precis.c config.c log.c store.c admin.c archive.c mam.c fuzz/fake_net.c

$(FUZZ_DIR)/fuzz_xml: fuzz/fuzz_xml.c xml.c $(HEADERS)
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ fuzz/fuzz_xml.c xml.c

$(FUZZ_DIR)/fuzz_jid: fuzz/fuzz_jid.c jid.c $(HEADERS)
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ fuzz/fuzz_jid.c jid.c

$(FUZZ_DIR)/fuzz_sasl: fuzz/fuzz_sasl.c auth.c store.c stanza.c xml.c $(HEADERS)
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ fuzz/fuzz_sasl.c auth.c store.c stanza.c xml.c $(LDLIBS)

$(FUZZ_DIR)/fuzz_precis: fuzz/fuzz_precis.c precis.c $(HEADERS)
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ fuzz/fuzz_precis.c precis.c

$(FUZZ_DIR)/fuzz_archive: fuzz/fuzz_archive.c archive.c store.c log.c $(HEADERS)
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ fuzz/fuzz_archive.c archive.c store.c log.c

$(FUZZ_DIR)/fuzz_admin: fuzz/fuzz_admin.c admin.c $(HEADERS)
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ fuzz/fuzz_admin.c admin.c

$(FUZZ_DIR)/fuzz_stream: fuzz/fuzz_stream.c fuzz/fake_net.h $(FUZZ_STREAM_SRCS) $(HEADERS)
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ fuzz/fuzz_stream.c $(FUZZ_STREAM_SRCS) $(LDLIBS)

.PHONY: fuzz fuzz-smoke fuzz-build
fuzz-build: $(FUZZ_BINS)

# fuzz_run SECONDS: regressions first (each must pass), then each harness on a scratch copy of its corpus
define fuzz_run
	@fail=0; \
	for h in $(FUZZ_NAMES); do \
	  if ls fuzz/regressions/*/$$h-* >/dev/null 2>&1; then \
	    echo "== fuzz_$$h: regressions"; \
	    $(FUZZ_DIR)/fuzz_$$h -runs=1 fuzz/regressions/*/$$h-* >$(FUZZ_DIR)/$$h-regress.log 2>&1 \
	      || { echo "fuzz_$$h: a saved reproducer still fails (see $(FUZZ_DIR)/$$h-regress.log)"; fail=1; }; \
	  fi; \
	  rm -rf $(FUZZ_DIR)/corpus/$$h; mkdir -p $(FUZZ_DIR)/corpus/$$h $(FUZZ_DIR)/artifacts; \
	  cp fuzz/corpus/$$h/* $(FUZZ_DIR)/corpus/$$h/; \
	  echo "== fuzz_$$h: $(1) s"; \
	  $(FUZZ_DIR)/fuzz_$$h -max_total_time=$(1) -print_final_stats=1 -dict=fuzz/xmpp.dict \
	    -artifact_prefix=$(FUZZ_DIR)/artifacts/$$h- $(FUZZ_DIR)/corpus/$$h >$(FUZZ_DIR)/$$h.log 2>&1 \
	    || { echo "fuzz_$$h: CRASH (see $(FUZZ_DIR)/$$h.log, input in $(FUZZ_DIR)/artifacts/)"; fail=1; }; \
	  grep -E '^stat::number_of_executed_units' $(FUZZ_DIR)/$$h.log || true; \
	done; exit $$fail
endef

fuzz-smoke: $(FUZZ_BINS)
	$(call fuzz_run,$(or $(FUZZ_SECONDS),10))

fuzz: $(FUZZ_BINS)
	$(call fuzz_run,$(or $(FUZZ_SECONDS),300))
# ---- end fuzz ----------------------------------------------------------------------------------------

# ---- bench: the load generator and the benchmark suite (see BENCHMARKS.md) ----
.PHONY: bench bench-large bench-compare

$(BUILD)/couplet-load: bench/couplet-load.c | $(BUILD)
	$(CC) $(WARN) -O2 -o $@ bench/couplet-load.c $(LDLIBS)

# The standard suite (2-3 minutes on 2 cores): Markdown tables for BENCHMARKS.md on stdout.
bench: $(BUILD)/couplet $(BUILD)/couplet-load
	@bash bench/run.sh

# 100,000 idle sessions (needs a file descriptor hard limit above 100,000).
bench-large: $(BUILD)/couplet $(BUILD)/couplet-load
	@bash bench/run.sh --large

# Couplet, Prosody and ejabberd (Debian packages, installed if missing) under the same generator; as root,
# about 4 minutes. Markdown tables for BENCHMARKS.md on stdout.
bench-compare: $(BUILD)/couplet $(BUILD)/couplet-load
	@bash bench/compare.sh
# ---- end of bench ----
