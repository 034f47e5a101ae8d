/* The C reference responder of floor.py: blocking reads, one connection at a
 * time on 127.0.0.1:PORT, "OK" to every PUB or MPUB (a line, a 4-byte size,
 * that many bytes) after the 4-byte magic, nothing else. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char OK_FRAME[10] = {0, 0, 0, 6, 0, 0, 0, 0, 'O', 'K'};
static char buf[1 << 20];
static char out[10 * 4096];

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: floor PORT\n");
        return 2;
    }
    int one = 1;
    int server = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(argv[1]));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(server, (struct sockaddr *)&addr, sizeof addr) || listen(server, 16)) {
        perror("floor");
        return 1;
    }
    for (;;) {
        int conn = accept(server, NULL, NULL);
        if (conn < 0) continue;
        setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        size_t have = 0;
        int magic = 0;
        for (;;) {
            ssize_t got = read(conn, buf + have, sizeof buf - have);
            if (got <= 0) break;
            have += (size_t)got;
            size_t pos = 0;
            if (!magic) {
                if (have < 4) continue;
                pos = 4;
                magic = 1;
            }
            size_t done = 0;
            for (;;) {
                char *newline = memchr(buf + pos, '\n', have - pos);
                if (!newline) break;
                size_t line = (size_t)(newline - (buf + pos)) + 1;
                if (have - pos < line + 4) break;
                uint32_t size;
                memcpy(&size, buf + pos + line, 4);
                size = ntohl(size);
                if (have - pos < line + 4 + size) break;
                pos += line + 4 + size;
                done++;
            }
            if (pos == 0 && have == sizeof buf) break; /* a command longer than buf */
            memmove(buf, buf + pos, have - pos);
            have -= pos;
            while (done) {
                size_t n = done < 4096 ? done : 4096;
                for (size_t i = 0; i < n; i++) memcpy(out + 10 * i, OK_FRAME, 10);
                if (write(conn, out, 10 * n) < 0) break;
                done -= n;
            }
        }
        close(conn);
    }
}
