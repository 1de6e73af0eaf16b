# Couplet - build, run, test.  `make run` starts the server on its embedded defaults;
# `make test` builds everything (plain and with ASan+UBSan) and runs every test.

CC      ?= cc
BUILD   ?= build
CFLAGS  ?= -O2 -g
WARN     = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
SAN_FLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDLIBS   = -lssl -lcrypto

CORE_SRCS = net_epoll.c xml.c server.c auth.c muc.c jid.c config.c store.c
CORE_OBJS = $(CORE_SRCS:%.c=$(BUILD)/%.o)
TEST_SRCS = $(wildcard tests/test_*.c)
TEST_BINS = $(TEST_SRCS:tests/%.c=$(BUILD)/%)
HEADERS   = $(wildcard *.h) tests/check.h

.PHONY: all run test asan unit specs clean valgrind

all: $(BUILD)/couplet $(BUILD)/scs_runner $(TEST_BINS)

$(BUILD)/%.o: %.c $(HEADERS) | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -c $< -o $@

$(BUILD)/couplet: $(BUILD)/main.o $(CORE_OBJS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/scs_runner: tests/scs_runner.c $(CORE_OBJS) $(HEADERS)
	$(CC) $(WARN) $(CFLAGS) -I. -o $@ tests/scs_runner.c $(CORE_OBJS) $(LDLIBS)

$(BUILD)/test_%: tests/test_%.c $(CORE_OBJS) $(HEADERS)
	$(CC) $(WARN) $(CFLAGS) -I. -o $@ $< $(CORE_OBJS) $(LDLIBS)

$(BUILD):
	mkdir -p $(BUILD)

couplet: $(BUILD)/couplet
	cp $(BUILD)/couplet couplet

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
