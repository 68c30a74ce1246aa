/*
 * A stand-in engine for the proxy bench in C: OpenAI-compatible streamed chat completions, timed
 * like the Node stand-in (bench/serve-openai.ts): a role chunk at once, the first token after
 * 20 ms, then one every 20 ms, a finish chunk, the usage chunk when the request asked for it, and
 * [DONE]. One thread and epoll, so that its own queueing (the Node stand-in's event loop carries
 * every stream's timers and writes) stays out of what the paths in front of it are measured to add.
 *
 * usage: engine   (listens on 127.0.0.1, an ephemeral port; prints http://127.0.0.1:PORT)
 * Serves GET /v1/models and POST /v1/chat/completions with "stream": true; x-sim-tokens sets the
 * number of content chunks (default 16). Anything else is 404.
 */
#define _GNU_SOURCE /* strcasestr */
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
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 4096
#define IN_BUF 65536
#define FIRST_TOKEN_MS 20.0
#define TOKEN_GAP_MS 20.0

struct conn {
  int fd;
  char in[IN_BUF];
  size_t in_len;
  int streaming;      /* a response is being sent */
  int tokens, sent;   /* content chunks asked for, and sent so far */
  int include_usage;
  double next_at;     /* when the next chunk is due */
};

static struct conn *conns[MAX_CONNS];
static int ep;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000.0 + t.tv_nsec / 1e6;
}

static void drop(struct conn *c) {
  conns[c->fd] = NULL;
  close(c->fd);
  free(c);
}

/* Writes all of `p`; a client that cannot take a few hundred bytes at once is dropped. */
static int send_all(struct conn *c, const char *p, size_t n) {
  ssize_t w = write(c->fd, p, n);
  if (w != (ssize_t)n) {
    drop(c);
    return 0;
  }
  return 1;
}

/* One chunk of chunked coding holding one SSE event. */
static size_t sse_chunk(char *out, size_t cap, const char *data) {
  size_t len = strlen(data) + 8; /* "data: " + "\n\n" */
  return (size_t)snprintf(out, cap, "%zx\r\ndata: %s\n\n\r\n", len, data);
}

static int respond(struct conn *c, int status, const char *type, const char *body) {
  char out[1024];
  int n = snprintf(out, sizeof out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n%s", status,
                   status == 200 ? "OK" : "Not Found", type, strlen(body), body);
  return send_all(c, out, (size_t)n);
}

/* Handles the complete requests in c->in; returns 0 if c was dropped. */
static int take_requests(struct conn *c) {
  while (!c->streaming) {
    c->in[c->in_len < IN_BUF ? c->in_len : IN_BUF - 1] = 0;
    char *end = strstr(c->in, "\r\n\r\n");
    if (!end) return 1;
    size_t head_len = (size_t)(end + 4 - c->in);
    const char *cl = strcasestr(c->in, "\r\ncontent-length:");
    size_t body_len = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
    if (head_len + body_len > IN_BUF - 1) {
      drop(c);
      return 0;
    }
    if (c->in_len < head_len + body_len) return 1;
    char saved = c->in[head_len + body_len];
    c->in[head_len + body_len] = 0;
    const char *body = c->in + head_len;
    const char *tokens = strcasestr(c->in, "\r\nx-sim-tokens:");
    int ok = 1;
    if (strncmp(c->in, "GET /v1/models ", 15) == 0) {
      ok = respond(c, 200, "application/json", "{\"object\":\"list\",\"data\":[{\"id\":\"bench-model\",\"object\":\"model\"}]}");
    } else if (strncmp(c->in, "POST /v1/chat/completions ", 26) == 0 && (strstr(body, "\"stream\":true") || strstr(body, "\"stream\": true"))) {
      c->streaming = 1;
      c->tokens = tokens && tokens < end ? atoi(tokens + 15) : 16;
      c->sent = 0;
      c->include_usage = strstr(body, "\"include_usage\":true") || strstr(body, "\"include_usage\": true");
      c->next_at = now_ms() + FIRST_TOKEN_MS;
      char out[1024];
      size_t n = (size_t)snprintf(out, sizeof out,
                                  "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n");
      n += sse_chunk(out + n, sizeof out - n,
                     "{\"id\":\"chatcmpl-sim\",\"object\":\"chat.completion.chunk\",\"model\":\"bench-model\",\"choices\":"
                     "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}");
      ok = send_all(c, out, n);
    } else {
      ok = respond(c, 404, "application/json", "{\"error\":{\"message\":\"not found\"}}");
    }
    if (!ok) return 0;
    c->in[head_len + body_len] = saved;
    memmove(c->in, c->in + head_len + body_len, c->in_len - head_len - body_len);
    c->in_len -= head_len + body_len;
  }
  return 1;
}

/* Sends the chunk that is due on a streaming connection; returns 0 if c was dropped. */
static int step(struct conn *c) {
  char data[512], out[2048];
  size_t n = 0;
  if (c->sent < c->tokens) {
    snprintf(data, sizeof data,
             "{\"id\":\"chatcmpl-sim\",\"object\":\"chat.completion.chunk\",\"model\":\"bench-model\",\"choices\":[{\"index\":0,"
             "\"delta\":{\"content\":\"%s%d\"},\"finish_reason\":null}]}",
             c->sent % 7 == 0 ? " the" : " w", c->sent);
    n = sse_chunk(out, sizeof out, data);
    c->sent++;
    c->next_at += TOKEN_GAP_MS;
    return send_all(c, out, n);
  }
  n = sse_chunk(out, sizeof out,
                "{\"id\":\"chatcmpl-sim\",\"object\":\"chat.completion.chunk\",\"model\":\"bench-model\",\"choices\":[{\"index\":0,"
                "\"delta\":{},\"finish_reason\":\"length\"}]}");
  if (c->include_usage) {
    snprintf(data, sizeof data,
             "{\"id\":\"chatcmpl-sim\",\"object\":\"chat.completion.chunk\",\"model\":\"bench-model\",\"choices\":[],"
             "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":%d,\"total_tokens\":%d}}",
             c->tokens, c->tokens + 12);
    n += sse_chunk(out + n, sizeof out - n, data);
  }
  n += sse_chunk(out + n, sizeof out - n, "[DONE]");
  n += (size_t)snprintf(out + n, sizeof out - n, "0\r\n\r\n");
  c->streaming = 0;
  if (!send_all(c, out, n)) return 0;
  /* A request that came while this one streamed is answered now. */
  return take_requests(c);
}

int main(void) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 4096) != 0 || getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
    perror("listen");
    return 1;
  }
  printf("http://127.0.0.1:%d\n", ntohs(a.sin_port));
  fflush(stdout);
  ep = epoll_create1(0);
  struct epoll_event lev = {.events = EPOLLIN, .data.fd = -1};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
  struct epoll_event events[256];
  for (;;) {
    double t = now_ms(), next = -1;
    for (int fd = 0; fd < MAX_CONNS; fd++) {
      struct conn *c = conns[fd];
      if (!c || !c->streaming) continue;
      if (c->next_at <= t) {
        if (!step(c)) continue;
      }
      if (c->streaming && (next < 0 || c->next_at < next)) next = c->next_at;
    }
    /* epoll_wait's timeout is in whole ms: rounded up, a chunk is at most 1 ms late, as with Node's timers.
     * A chunk still overdue after its step (an engine descheduled for over a token gap is behind by
     * more than one) waits 0 ms: any negative timeout would block until the next event on a socket,
     * and with no request coming, that held every stream until someone else's poll arrived. */
    int timeout = next < 0 ? -1 : next <= t ? 0 : (int)(next - t) + 1;
    int k = epoll_wait(ep, events, 256, timeout);
    for (int e = 0; e < k; e++) {
      if (events[e].data.fd == -1) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) continue;
        if (fd >= MAX_CONNS) {
          close(fd);
          continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        c->fd = fd;
        conns[fd] = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        continue;
      }
      struct conn *c = conns[events[e].data.fd];
      if (!c) continue;
      ssize_t got = read(c->fd, c->in + c->in_len, IN_BUF - 1 - c->in_len);
      if (got <= 0) {
        if (got < 0 && errno == EAGAIN) continue;
        drop(c);
        continue;
      }
      c->in_len += (size_t)got;
      take_requests(c);
    }
  }
}
