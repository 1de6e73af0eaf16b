/* interop_portmap.c - an LD_PRELOAD shim for the interoperability matrix (tests/interop.sh): some clients
 * (xmppc) take no host or port and always dial the domain on 5222. With INTEROP_PORTMAP="FROM:TO" set, a
 * connect() to a loopback address on port FROM goes to port TO instead, so the client reaches the test's
 * server on its free port; every other connect() is untouched. The client's bytes are not changed.
 * Built by tests/interop.sh: cc -shared -fPIC -o portmap.so tests/interop_portmap.c -ldl */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

static int wanted_ports(unsigned *from, unsigned *to) {
    const char *v = getenv("INTEROP_PORTMAP");
    return v && sscanf(v, "%u:%u", from, to) == 2 && *from < 65536 && *to < 65536;
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static connect_fn real_connect;
    unsigned from, to;
    if (!real_connect) real_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");
    if (!real_connect) return -1;
    if (addr && wanted_ports(&from, &to)) {
        if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
            struct sockaddr_in a;
            memcpy(&a, addr, sizeof a);
            if (ntohs(a.sin_port) == from && (ntohl(a.sin_addr.s_addr) >> 24) == 127) {
                a.sin_port = htons((unsigned short)to);
                return real_connect(fd, (const struct sockaddr *)&a, sizeof a);
            }
        } else if (addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
            struct sockaddr_in6 a;
            memcpy(&a, addr, sizeof a);
            if (ntohs(a.sin6_port) == from && IN6_IS_ADDR_LOOPBACK(&a.sin6_addr)) {
                a.sin6_port = htons((unsigned short)to);
                return real_connect(fd, (const struct sockaddr *)&a, sizeof a);
            }
        }
    }
    return real_connect(fd, addr, len);
}
