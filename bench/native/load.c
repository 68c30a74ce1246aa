/*
 * The proxy bench's load in C, as wrk or Nighthawk would apply it: one thread, epoll, each client
 * a keep-alive connection streaming one request after another. At 200 streams the Node load
 * (bench/proxy.ts) spends about a third of a core of this 2-core machine on itself, and its own
 * event loop delays what it reads; this one spends under a tenth of a core.
 *
 * usage: load PORT CLIENTS STAGGER_MS WINDOW_MS TOKENS
 *   Client i starts i/CLIENTS of STAGGER_MS late; each sends
 *   POST /v1/chat/completions (stream: true, x-sim-tokens: TOKENS) until the window (WINDOW_MS,
 *   opening at STAGGER_MS) has closed, then finishes its request.
 * prints one JSON line: {"ttfb":[ms...],"chunks":N,"chunksInWindow":N,"elapsedMs":X,"errors":N,
 *   "slowestConnectMs":X,"slowestRequestMs":X}
 *   ttfb: per request, ms from its first byte sent to the first byte of its response body;
 *   chunks: SSE events received (each ends in a blank line).
 */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536

static const char BODY[] =
    "{\"model\":\"bench-model\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Summarise the "
    "quarterly report in three lines.\"}]}";

enum phase { WAITING, CONNECTING, HEAD, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, LENGTH_BODY, DONE };

struct client {
  int fd;
  double start_at, connect_at, sent_at;
  enum phase phase;
  int got_body;
  long remaining;     /* bytes left in the chunk or the content-length body */
  char head[2048];    /* the response head as it accumulates (the rest of a longer one is not kept) */
  size_t head_len;
  char line[64];      /* a chunk-size line as it accumulates */
  size_t line_len;
  char last;          /* the last body byte, to find a blank line across reads */
};

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000.0 + t.tv_nsec / 1e6;
}

static int ep, port, tokens;
static char request[1024];
static size_t request_len;
static double *ttfb;
static size_t ttfb_len, ttfb_cap;
static long chunks, chunks_in_window, errors;
/* The longest connect and the longest request (first byte sent to last received): a round that ends
 * late with nothing late in its ttfb was held up in one of these. */
static double slowest_connect, slowest_request;
static double window_from, window_to;

static void send_request(struct client *c);

/* Non-blocking, so that a connect the path is slow to take holds up no other client. */
static void connect_client(struct client *c) {
  c->connect_at = now_ms();
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int done = connect(c->fd, (struct sockaddr *)&a, sizeof a) == 0;
  if (!done && errno != EINPROGRESS) {
    perror("connect");
    exit(1);
  }
  struct epoll_event ev = {.events = done ? EPOLLIN : EPOLLOUT, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
  c->phase = CONNECTING;
  if (done) send_request(c);
}

/* The connect has completed: listen for the answer and send. */
static void connected(struct client *c) {
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err) {
    fprintf(stderr, "connect: %s\n", strerror(err));
    exit(1);
  }
  double took = now_ms() - c->connect_at;
  if (took > slowest_connect) slowest_connect = took;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  send_request(c);
}

static void send_request(struct client *c) {
  c->phase = HEAD;
  c->got_body = 0;
  c->head_len = 0;
  c->line_len = 0;
  c->remaining = -1;
  c->last = 0;
  c->sent_at = now_ms();
  /* A request this small goes out in one write on a fresh or idle socket. */
  if (write(c->fd, request, request_len) != (ssize_t)request_len) {
    perror("write");
    exit(1);
  }
}

static void body_bytes(struct client *c, const char *p, size_t n, double t) {
  if (!n) return;
  if (!c->got_body) {
    c->got_body = 1;
    if (ttfb_len == ttfb_cap) {
      ttfb_cap = ttfb_cap ? ttfb_cap * 2 : 4096;
      ttfb = realloc(ttfb, ttfb_cap * sizeof *ttfb);
    }
    ttfb[ttfb_len++] = t - c->sent_at;
  }
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '\n' && c->last == '\n') {
      chunks++;
      if (t >= window_from && t <= window_to) chunks_in_window++;
    }
    c->last = p[i];
  }
}

/* Takes up to c->remaining body bytes of the n at p (a chunk's, or a Content-Length body's); returns how many. */
static size_t take_body(struct client *c, const char *p, size_t n, double t) {
  size_t take = n < (size_t)c->remaining ? n : (size_t)c->remaining;
  body_bytes(c, p, take, t);
  c->remaining -= (long)take;
  return take;
}

/* Reads the head's fields that frame the body. */
static void head_done(struct client *c, const char *head) {
  c->phase = DONE;
  const char *te = strcasestr(head, "\r\ntransfer-encoding: chunked");
  const char *cl = strcasestr(head, "\r\ncontent-length:");
  if (te) {
    c->phase = CHUNK_SIZE;
    c->line_len = 0;
  } else if (cl) {
    c->remaining = strtol(cl + 17, NULL, 10);
    c->phase = c->remaining > 0 ? LENGTH_BODY : DONE;
  }
  if (strncmp(head, "HTTP/1.1 200", 12) != 0) errors++;
}

/* Feeds received bytes through the response's framing; returns 1 when the response is complete. */
static int feed(struct client *c, const char *p, size_t n, double t) {
  size_t i = 0;
  while (i < n && c->phase != DONE) {
    switch (c->phase) {
      case HEAD: {
        if (c->head_len < sizeof c->head - 1) c->head[c->head_len++] = p[i];
        i++;
        if (c->head_len >= 4 && memcmp(c->head + c->head_len - 4, "\r\n\r\n", 4) == 0) {
          c->head[c->head_len] = 0;
          head_done(c, c->head);
        }
        break;
      }
      case CHUNK_SIZE: {
        char ch = p[i++];
        if (ch == '\n') {
          c->line[c->line_len] = 0;
          c->remaining = strtol(c->line, NULL, 16);
          c->line_len = 0;
          c->phase = c->remaining ? CHUNK_DATA : TRAILER;
        } else if (c->line_len < sizeof c->line - 1) {
          c->line[c->line_len++] = ch;
        }
        break;
      }
      case CHUNK_DATA:
        i += take_body(c, p + i, n - i, t);
        if (!c->remaining) c->phase = CHUNK_CRLF;
        break;
      case CHUNK_CRLF:
        if (p[i++] == '\n') c->phase = CHUNK_SIZE;
        break;
      case TRAILER: {
        /* After the last chunk: an empty line ends the response (trailers are not expected). */
        char ch = p[i++];
        if (ch == '\n') {
          if (c->line_len == 0) c->phase = DONE;
          c->line_len = 0;
        } else if (ch != '\r') {
          c->line_len++;
        }
        break;
      }
      case LENGTH_BODY:
        i += take_body(c, p + i, n - i, t);
        if (!c->remaining) c->phase = DONE;
        break;
      default:
        i = n;
    }
  }
  if (i < n) errors++; /* bytes past the end of a response no request asked for */
  return c->phase == DONE;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: load PORT CLIENTS STAGGER_MS WINDOW_MS TOKENS\n");
    return 2;
  }
  port = atoi(argv[1]);
  int n = atoi(argv[2]);
  double stagger = atof(argv[3]), window = atof(argv[4]);
  tokens = atoi(argv[5]);
  request_len = (size_t)snprintf(request, sizeof request,
                                 "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: "
                                 "application/json\r\nAuthorization: Bearer sk-bench\r\nx-sim-tokens: %d\r\n"
                                 "Content-Length: %zu\r\n\r\n%s",
                                 port, tokens, sizeof BODY - 1, BODY);
  ep = epoll_create1(0);
  struct client *clients = calloc((size_t)n, sizeof *clients);
  double t0 = now_ms();
  window_from = t0 + stagger;
  window_to = window_from + window;
  for (int i = 0; i < n; i++) {
    clients[i].fd = -1;
    clients[i].phase = WAITING;
    clients[i].start_at = t0 + (double)i / n * stagger;
  }
  int open = n;
  static char buf[BUF];
  struct epoll_event events[256];
  while (open > 0) {
    /* Start the clients whose time has come; sleep until the next one or the next event. */
    double t = now_ms(), next = -1;
    for (int i = 0; i < n; i++) {
      if (clients[i].phase != WAITING || clients[i].fd != -1) continue;
      if (clients[i].start_at <= t) {
        connect_client(&clients[i]);
      } else if (next < 0 || clients[i].start_at < next) {
        next = clients[i].start_at;
      }
    }
    int timeout = next < 0 ? 1000 : (int)(next - t) + 1;
    int k = epoll_wait(ep, events, 256, timeout);
    t = now_ms();
    for (int e = 0; e < k; e++) {
      struct client *c = events[e].data.ptr;
      if (c->phase == CONNECTING) {
        connected(c);
        continue;
      }
      ssize_t got = read(c->fd, buf, sizeof buf);
      if (got <= 0) {
        if (got < 0 && errno == EAGAIN) continue;
        /* The path closed the connection: count it, and the client goes on with a new one. */
        errors++;
        close(c->fd);
        connect_client(c);
        continue;
      }
      if (!feed(c, buf, (size_t)got, t)) continue;
      if (t - c->sent_at > slowest_request) slowest_request = t - c->sent_at;
      if (t < window_to) {
        send_request(c);
      } else {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->phase = DONE;
        open--;
      }
    }
  }
  printf("{\"ttfb\":[");
  for (size_t i = 0; i < ttfb_len; i++) printf("%s%.4f", i ? "," : "", ttfb[i]);
  printf("],\"chunks\":%ld,\"chunksInWindow\":%ld,\"elapsedMs\":%.1f,\"errors\":%ld,\"slowestConnectMs\":%.3f,"
         "\"slowestRequestMs\":%.3f}\n",
         chunks, chunks_in_window, now_ms() - t0, errors, slowest_connect, slowest_request);
  return 0;
}
