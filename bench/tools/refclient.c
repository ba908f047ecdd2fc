/* The floor under the lab's probe: what a TCP client costs when it does nothing but its system calls.
 *
 * Same requests as lab.measure.probe (a new connection per request, GET with Connection: close, read to
 * the end), the same system calls (socket, connect, getsockname for the source port the probe records,
 * one edge-triggered epoll registration, send, recv to EOF, close), the same in-flight limit, and nothing
 * else: no records, no parsing. bench/probe_rate.py compiles it when the machine has a C compiler and runs
 * it beside the probe, so the probe's CPU per request splits into what any client pays the kernel (and
 * the virtual machine) and what is the probe's own.
 *
 * refclient IP PORT REQUESTS CONCURRENCY prints {"ok": N, "durationS": S}.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    struct sockaddr_in to = {.sin_family = AF_INET};
    long n, conc;
    if (argc != 5 || inet_pton(AF_INET, argv[1], &to.sin_addr) != 1 || (n = atol(argv[3])) < 0
        || (conc = atol(argv[4])) < 1 || conc > 4096) {
        fprintf(stderr, "usage: refclient IPv4 PORT REQUESTS CONCURRENCY(1-4096)\n");
        return 2;
    }
    to.sin_port = htons((unsigned short)atoi(argv[2]));
    char request[160], buf[65536];
    int len = snprintf(request, sizeof request, "GET / HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n",
                       argv[1], argv[2]);
    static char connecting[65536];  /* by file descriptor: 1 until the request is sent */
    long started = 0, finished = 0, ok = 0, running = 0;
    int ep = epoll_create1(0);
    struct epoll_event events[64];
    double t0 = now();
    while (finished < n) {
        while (started < n && running < conc) {
            started++;
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (fd < 0 || fd >= (int)sizeof connecting) { perror("socket"); return 1; }
            if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0 && errno != EINPROGRESS) {
                close(fd);
                finished++;
                continue;
            }
            struct sockaddr_in local;
            socklen_t size = sizeof local;
            getsockname(fd, (struct sockaddr *)&local, &size);
            connecting[fd] = 1;
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.fd = fd};
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
            running++;
        }
        int k = epoll_wait(ep, events, 64, 2000);
        if (k == 0) { fprintf(stderr, "no answer for 2 s\n"); return 1; }
        for (int i = 0; i < k; i++) {
            int fd = events[i].data.fd, end = 0, fail = 0;
            if (connecting[fd]) {
                if (events[i].events & (EPOLLERR | EPOLLHUP) || send(fd, request, len, 0) != len) fail = 1;
                connecting[fd] = 0;
            } else {
                for (;;) {
                    ssize_t got = recv(fd, buf, sizeof buf, 0);
                    if (got > 0) continue;
                    if (got == 0) end = 1;
                    else if (errno != EAGAIN) fail = 1;
                    break;
                }
            }
            if (end || fail) {
                close(fd);
                running--;
                finished++;
                ok += end;
            }
        }
    }
    printf("{\"ok\": %ld, \"durationS\": %.6f}\n", ok, now() - t0);
    return 0;
}
