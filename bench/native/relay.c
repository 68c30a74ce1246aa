/*
 * The floor for the inline-proxy benchmark: a TCP byte relay in C. One thread, epoll, each
 * accepted connection paired with its own connection to the engine, bytes copied both ways and
 * nothing parsed. Whatever it adds over direct access is what one more hop through a process
 * costs on the machine (two more socket writes, two more wake-ups per exchange), which any proxy,
 * in any language, pays before doing its own work.
 *
 * usage: relay TARGET_PORT   (listens on 127.0.0.1, an ephemeral port; prints http://127.0.0.1:PORT)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 65536

struct pair;
/* One socket of a pair, with the bytes read from it that wait to go out on the other. */
struct conn {
  int fd;
  int want; /* the epoll events asked for now */
  char buf[BUF];
  size_t off, len;
  struct conn *peer;
  struct pair *pair;
};
struct pair {
  struct conn a, b;
  int dead;
  struct pair *next_dead;
};

static int ep;
static struct pair *graveyard;

static void want(struct conn *c, int events) {
  if (c->want == events) return;
  c->want = events;
  struct epoll_event ev = {.events = (uint32_t)events, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Closing frees nothing yet: later events of the same batch may still name the pair. */
static void kill_pair(struct pair *p) {
  if (p->dead) return;
  p->dead = 1;
  close(p->a.fd);
  close(p->b.fd);
  p->next_dead = graveyard;
  graveyard = p;
}

static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, O_NONBLOCK);
}

/* Sends what `from` holds to its peer: 0 when all of it went, 1 when the peer is full, -1 on error. */
static int flush(struct conn *from) {
  while (from->len) {
    ssize_t n = write(from->peer->fd, from->buf + from->off, from->len);
    if (n < 0) return errno == EAGAIN ? 1 : -1;
    from->off += (size_t)n;
    from->len -= (size_t)n;
  }
  from->off = 0;
  return 0;
}

static void readable(struct conn *c) {
  ssize_t r = read(c->fd, c->buf, BUF);
  if (r == 0 || (r < 0 && errno != EAGAIN)) {
    kill_pair(c->pair);
    return;
  }
  if (r < 0) return;
  c->len = (size_t)r;
  int f = flush(c);
  if (f < 0) {
    kill_pair(c->pair);
  } else if (f == 1) {
    /* Backpressure: stop reading here until the peer drains. */
    want(c, c->want & ~EPOLLIN);
    want(c->peer, c->peer->want | EPOLLOUT);
  }
}

static void writable(struct conn *c) {
  struct conn *src = c->peer;
  int f = flush(src);
  if (f < 0) {
    kill_pair(c->pair);
  } else if (f == 0) {
    want(c, c->want & ~EPOLLOUT);
    want(src, src->want | EPOLLIN);
  }
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: relay TARGET_PORT\n");
    return 2;
  }
  struct sockaddr_in target = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
  inet_pton(AF_INET, "127.0.0.1", &target.sin_addr);

  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET};
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 4096)) {
    perror("listen");
    return 1;
  }
  socklen_t alen = sizeof addr;
  getsockname(lfd, (struct sockaddr *)&addr, &alen);
  printf("http://127.0.0.1:%d\n", ntohs(addr.sin_port));
  fflush(stdout);

  ep = epoll_create1(0);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
  struct epoll_event events[256];
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    for (int i = 0; i < n; i++) {
      struct conn *c = events[i].data.ptr;
      if (!c) {
        int client = accept(lfd, NULL, NULL);
        if (client < 0) continue;
        int engine = socket(AF_INET, SOCK_STREAM, 0);
        /* A blocking connect: on loopback it completes at once. */
        if (connect(engine, (struct sockaddr *)&target, sizeof target)) {
          close(client);
          close(engine);
          continue;
        }
        nodelay(client);
        nodelay(engine);
        struct pair *p = calloc(1, sizeof *p);
        p->a.fd = client, p->b.fd = engine;
        p->a.peer = &p->b, p->b.peer = &p->a;
        p->a.pair = p->b.pair = p;
        p->a.want = p->b.want = EPOLLIN;
        struct epoll_event ea = {.events = EPOLLIN, .data.ptr = &p->a}, eb = {.events = EPOLLIN, .data.ptr = &p->b};
        epoll_ctl(ep, EPOLL_CTL_ADD, client, &ea);
        epoll_ctl(ep, EPOLL_CTL_ADD, engine, &eb);
        continue;
      }
      uint32_t e = events[i].events;
      if (!c->pair->dead && (e & EPOLLOUT)) writable(c);
      if (!c->pair->dead && (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) && (c->want & EPOLLIN)) readable(c);
      if (!c->pair->dead && (e & (EPOLLHUP | EPOLLERR)) && !(c->want & EPOLLIN)) kill_pair(c->pair);
    }
    while (graveyard) {
      struct pair *p = graveyard;
      graveyard = p->next_dead;
      free(p);
    }
  }
}
