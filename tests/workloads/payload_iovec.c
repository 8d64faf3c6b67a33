/* An HTTP/1.1 server for one keep-alive connection that receives its three requests the ways
 * a payload tracer can get wrong:
 *   1. read(2), 16 bytes at a time: every read fills its buffer, so each next receive on the
 *      connection is taken as a continuation of the request;
 *   2. readv(2) whose first iovec is empty (the data lands in the second);
 *   3. recvmsg(2) likewise.
 * The empty iovec points at 8 KiB of 'Z': a tracer copying from it captures them.
 * argv[1]: the port to listen on, on 127.0.0.1. Exits 0 once the client closes. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static const char response[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
static char decoy[8192];
static char buf[4096];

static int ends_header(size_t len) { return len >= 4 && memcmp(buf + len - 4, "\r\n\r\n", 4) == 0; }

static void respond(int fd) {
    if (write(fd, response, sizeof response - 1) != (ssize_t)(sizeof response - 1)) exit(3);
}

int main(int argc, char **argv) {
    if (argc < 2) return 1;
    memset(decoy, 'Z', sizeof decoy);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 1)) return 1;
    int fd = accept(listener, NULL, NULL);
    if (fd < 0) return 1;

    size_t got = 0;
    while (!ends_header(got)) {
        if (got + 16 > sizeof buf) return 2;
        ssize_t n = read(fd, buf + got, 16);
        if (n <= 0) return 2;
        got += n;
    }
    respond(fd);

    struct iovec iov[2] = {{decoy, 0}, {buf, sizeof buf}};
    ssize_t n = readv(fd, iov, 2);
    if (n <= 0 || !ends_header(n)) return 4;
    respond(fd);

    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    n = recvmsg(fd, &msg, 0);
    if (n <= 0 || !ends_header(n)) return 5;
    respond(fd);

    while (read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
    return 0;
}
