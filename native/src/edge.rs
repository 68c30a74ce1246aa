//! The native data path of request-level mode, first part: HTTP/1.1 between clients and a pool of
//! engine connections, with nothing measured yet. The Node proxy cannot meet the issue's latency
//! target (a Node program that only copies bytes already misses it), so the bytes of a request and
//! its stream are to move here, off the JS event loop.
//!
//! One thread runs an epoll loop over every connection, as the bench's C relay does: a chunk costs
//! a read and a write, and many ready connections share one wake-up. (A thread per connection was
//! tried first: each chunk cost a context switch, about twice the relay's CPU, and its 400 threads
//! waking preempted the engine on a two-core machine.)
//!
//! What it does to a request, as the Node proxy does: drops RFC 9110's connection-specific fields
//! (and those the Connection field names) both ways, adds `Via`, sets `Host` and the framing; caps
//! the request body (413, and the engine never sees it); ends a client's stream cleanly when the
//! engine resets; closes the engine connection when the client goes away, which cancels the
//! request; answers 502 and 504 when the engine refuses or does not answer in time. Output to a
//! client that reads slowly is bounded: past HIGH_WATER the engine is not read until it drains.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sse::{route_of, skip_ws, sse_data, string_end, value_end, ReadingRules, Route, StreamReading};

#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

/** struct epoll_event: packed on x86-64 only, as <sys/epoll.h> declares it. */
#[cfg_attr(target_arch = "x86_64", repr(C, packed))]
#[cfg_attr(not(target_arch = "x86_64"), repr(C))]
#[derive(Clone, Copy)]
struct EpollEvent {
    events: u32,
    data: u64,
}

extern "C" {
    fn poll(fds: *mut PollFd, nfds: u64, timeout: i32) -> i32;
    fn epoll_create1(flags: i32) -> i32;
    fn epoll_ctl(epfd: i32, op: i32, fd: i32, event: *mut EpollEvent) -> i32;
    fn epoll_wait(epfd: i32, events: *mut EpollEvent, maxevents: i32, timeout: i32) -> i32;
    fn close(fd: i32) -> i32;
    fn eventfd(initval: u32, flags: i32) -> i32;
    fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    fn getrandom(buf: *mut u8, len: usize, flags: u32) -> isize;
    fn read(fd: i32, buf: *mut u8, count: usize) -> isize;
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    fn listen(fd: i32, backlog: i32) -> i32;
    fn socket(domain: i32, kind: i32, protocol: i32) -> i32;
    fn connect(fd: i32, addr: *const u8, len: u32) -> i32;
    fn memchr(s: *const u8, c: i32, n: usize) -> *const u8;
    fn memmem(haystack: *const u8, haystack_len: usize, needle: *const u8, needle_len: usize) -> *const u8;
}

/** Where `byte` first occurs in `hay` (libc's memchr: every read of a stream is searched for line ends). */
pub(crate) fn find_byte(hay: &[u8], byte: u8) -> Option<usize> {
    let p = unsafe { memchr(hay.as_ptr(), i32::from(byte), hay.len()) };
    (!p.is_null()).then(|| p as usize - hay.as_ptr() as usize)
}

/** Whether `needle` occurs in `hay` (libc's memmem). */
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !unsafe { memmem(hay.as_ptr(), hay.len(), needle.as_ptr(), needle.len()) }.is_null()
}

/**
 * Connections the kernel queues for the loop before it accepts them. Rust's TcpListener asks for
 * 128; a burst of more connects than that within one loop turn (200 clients starting together) has
 * the rest dropped and retried by their SYN timer a second later. The kernel caps it at somaxconn.
 */
const LISTEN_BACKLOG: i32 = 4096;

const POLLIN: i16 = 0x1;
const POLLRDHUP: i16 = 0x2000;
const EPOLLIN: u32 = 0x1;
const EPOLLOUT: u32 = 0x4;
const EPOLLERR: u32 = 0x8;
const EPOLLHUP: u32 = 0x10;
const EPOLLRDHUP: u32 = 0x2000;
const EPOLL_CTL_ADD: i32 = 1;
const EPOLL_CTL_MOD: i32 = 3;
const EPOLL_CLOEXEC: i32 = 0o2000000;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: i32 = 1;
const SOCK_NONBLOCK: i32 = 0o4000;
const SOCK_CLOEXEC: i32 = 0o2000000;
const EINPROGRESS: i32 = 115;

/** A request or response head larger than this is refused (Node's default is 16 KiB). */
const MAX_HEAD: usize = 64 * 1024;
/** A chunk-size or trailer line longer than this is a broken stream. */
const MAX_LINE: usize = 4096;
/** Engine connections kept idle for reuse. */
const MAX_IDLE: usize = 256;
const READ_SIZE: usize = 64 * 1024;
/** Bytes queued for a client past which the engine is not read (backpressure). */
const HIGH_WATER: usize = 1024 * 1024;
/** How long, at most, the client of a refused body is read from before its connection closes. */
const DRAIN_FOR: Duration = Duration::from_secs(5);
/** The loop's longest sleep: how soon it sees a stop. */
const TICK_MS: i32 = 100;
/**
 * What the loop has seen is handed to the policy at most this often (a request that waits for it
 * goes at once, with all seen before it): each hand-over wakes Node's main thread, and at
 * thousands of reads a second handing each turn's few reads costs more there than the reads do.
 * The times are taken when each thing happens, so this delays only when it is recorded. Every
 * 2 ms, against every 20, the agent woke Node three times as often and added about 0.03 ms more to
 * the median first byte at 200 streams. A scrape waits for the records (agent.ts's
 * SCRAPE_SETTLE_MS, 50 ms), so this stays well under that.
 */
const HAND_EVERY: Duration = Duration::from_millis(20);
/** Body bytes of a non-SSE 2xx answer copied for the policy (it reads the usage of a JSON body up to this size). */
const MAX_TAPPED_BODY: usize = 4 * 1024 * 1024;
const LISTENER: u64 = u64::MAX;
const WAKE: u64 = u64::MAX - 1;
/**
 * An idle engine connection's interest: anything readable on it is the engine closing it (or
 * breaking the protocol), which takes it out of the pool at once. It is also what a connection
 * reading an answer wants, so one that joins or leaves the pool is rarely given a new interest.
 */
const IDLE_WANT: u32 = EPOLLIN | EPOLLRDHUP;
const EFD_CLOEXEC: i32 = 0o2000000;
const EFD_NONBLOCK: i32 = 0o4000;
const VIA: &str = "1.1 infertel";

const HOP_BY_HOP: [&str; 9] =
    ["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"];

pub struct Config {
    pub listen: String,
    /** The engine, `host:port`, resolved once at start. */
    pub target: String,
    pub max_body: usize,
    pub upstream_timeout: Duration,
    /**
     * The request's policy, when there is one: each complete request is handed to it (batched per
     * turn of the loop) and waits for its Decision, given back through Edge::decide.
     */
    pub admit: Option<Admit>,
    /**
     * Frees what the policy has given back of the batches it was handed; called on the loop's
     * thread each turn, so that the thread that allocated a batch frees it (returns.rs says why).
     */
    pub free_returned: Option<FreeReturned>,
    /**
     * With a policy: false, each request waits for its Decision; true, the loop sends each request
     * at once (request id and include_usage done here) and the policy is told after, unless the
     * body needs JS to rewrite it.
     */
    pub tell_after: bool,
    /**
     * With tell_after: what the policy is handed of a request sent already keeps its prompt (for
     * the prompt's keyed hash); else only the members it reads for facts (policy_body).
     */
    pub keep_prompt: bool,
    /** Requests in progress at once (with the policy, with the engine or streaming); past it, 503. */
    pub max_concurrent: usize,
    /**
     * With a policy: read each 2xx event stream of a measured route here (sse.rs) and tell the
     * policy what it read at its end, instead of handing it every read.
     */
    pub reading: Option<Arc<ReadingRules>>,
}

/** A complete request, waiting for the policy's Decision. */
pub struct Admission {
    pub token: u64,
    /** Whether the request waits for a Decision (else it was sent already). */
    pub waits: bool,
    /** The request id sent (when it did not wait). */
    pub request_id: String,
    /** The loop asked the engine for usage the client did not ask for (when it did not wait). */
    pub usage_injected: bool,
    /** The loop answered it itself (413, 503 overloaded) without reading its body; its end follows. */
    pub answered: bool,
    /** When its head was complete (as Tap::at_ms). */
    pub at_ms: f64,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/**
 * Hands the policy, once per turn of the loop, the requests that became complete and what
 * happened to the answers of those it let through.
 */
pub type Admit = Box<dyn Fn(Vec<Admission>, Vec<Tap>, Vec<u8>) + Send>;

/** Frees on the loop's thread what the policy gave back (`Config::free_returned`). */
pub type FreeReturned = Box<dyn Fn() + Send>;

/** What the loop saw of one answer, and when (CLOCK_MONOTONIC, in ms, as Node's process.hrtime). */
pub struct Tap {
    pub token: u64,
    pub at_ms: f64,
    pub what: Seen,
}

pub enum Seen {
    /** The engine's head; `read`: its body is read here (a StreamReading), and no Data follows. */
    Head { status: u16, headers: Vec<(String, String)>, read: bool },
    /**
     * This many body bytes as the engine sent them (chunked coding removed; nothing stripped yet):
     * the next ones in the batch's bytes, where each turn's data lies end to end (one buffer for the
     * policy, not one per read).
     */
    Data(usize),
    /**
     * The exchange is over: complete, engine_reset, client_abort, upstream_timeout, upstream_refused
     * or policy_timeout; with what was read of a body read here (StreamReading::summary).
     */
    End(&'static str, Option<Vec<f64>>),
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/** CLOCK_MONOTONIC in ms: the clock of Node's process.hrtime, so JS can place these times on its own. */
pub fn monotonic_ms() -> f64 {
    let mut t = Timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { clock_gettime(1, &mut t) };
    t.tv_sec as f64 * 1000.0 + t.tv_nsec as f64 / 1e6
}

/** What the policy decided about a request. */
pub enum Decision {
    /** Send it, with these fields added (to the engine, and to the client's answer), and this body in place of the client's. */
    Forward { token: u64, upstream_fields: Vec<(String, String)>, client_fields: Vec<(String, String)>, body: Option<Vec<u8>>, strip_usage: bool },
    /** Answer the client with these bytes (a whole response); the engine never sees the request. */
    Answer { token: u64, response: Vec<u8> },
}

/** Decisions from the policy's thread to the loop; the eventfd wakes the loop. */
struct Inbox {
    decisions: std::sync::Mutex<Vec<Decision>>,
    wake: i32,
}

/** Fields from `k: v` lines (CRLF or LF); a line that is not a plain field is dropped, so no value can start a new field. */
pub fn fields_of(text: &str) -> Vec<(String, String)> {
    text.split('\n')
        .filter_map(|line| {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let (k, v) = line.split_once(':')?;
            let ok_name = !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic() && b != b':');
            let ok_value = !v.bytes().any(|b| b == 0 || b == b'\r' || b.is_ascii_control() && b != b'\t');
            (ok_name && ok_value).then(|| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

/** What the data path counts about itself; the names are the Node proxy's `infertel_proxy_events_total` events. */
#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub open: AtomicU64,
    pub body_too_large: AtomicU64,
    pub bad_request: AtomicU64,
    pub upstream_refused: AtomicU64,
    pub upstream_timeout: AtomicU64,
    pub engine_reset: AtomicU64,
    pub client_abort: AtomicU64,
    pub engine_connections: AtomicU64,
    pub overloaded: AtomicU64,
    pub policy_timeout: AtomicU64,
    /**
     * Ends told to the policy, counted before the answer's last bytes are written: once a client
     * has its answer, this count includes it, and the policy can tell when it has caught up.
     */
    pub ends_told: AtomicU64,
}

pub struct Edge {
    pub local: SocketAddr,
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    inbox: Arc<Inbox>,
}

impl Edge {
    pub fn start(cfg: Config) -> io::Result<Edge> {
        let target = cfg.target.to_socket_addrs()?.next().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the target names no address"))?;
        let listener = TcpListener::bind(cfg.listen.as_str())?;
        // listen() again on a listening socket only sets its backlog.
        if unsafe { listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
            return Err(io::Error::last_os_error());
        }
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let epfd = unsafe { epoll_create1(EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(io::Error::last_os_error());
        }
        let wake = unsafe { eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) };
        if wake < 0 {
            unsafe { close(epfd) };
            return Err(io::Error::last_os_error());
        }
        let inbox = Arc::new(Inbox { decisions: std::sync::Mutex::new(Vec::new()), wake });
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut lp = Loop {
            admit: cfg.admit,
            free_returned: cfg.free_returned,
            tell_after: cfg.tell_after,
            keep_prompt: cfg.keep_prompt,
            max_concurrent: cfg.max_concurrent,
            reading_rules: cfg.reading,
            inbox: inbox.clone(),
            admitting: std::collections::HashMap::new(),
            pending: Vec::new(),
            taps: Vec::new(),
            tap_bytes: Vec::new(),
            next_token: 0,
            epfd,
            listener,
            target,
            host: cfg.target.clone(),
            max_body: cfg.max_body,
            upstream_timeout: cfg.upstream_timeout,
            conns: Vec::new(),
            free: Vec::new(),
            freed: Vec::new(),
            up_owner: Vec::new(),
            up_free: Vec::new(),
            up_freed: Vec::new(),
            idle: Vec::new(),
            deadlines: BTreeSet::new(),
            next_exchange: 0,
            stats: stats.clone(),
            scratch: vec![0; READ_SIZE],
        };
        lp.ctl(EPOLL_CTL_ADD, lp.listener.as_raw_fd(), EPOLLIN, LISTENER)?;
        lp.ctl(EPOLL_CTL_ADD, wake, EPOLLIN, WAKE)?;
        let flag = stop.clone();
        // Spawned by the launcher, so the loop keeps its policy when the rest of the process is idled.
        let thread = crate::sched::spawn_kept("infertel-edge", move || {
            lp.run(&flag);
            unsafe { close(lp.epfd) };
        })?;
        Ok(Edge { local, stats, stop, thread: Some(thread), inbox })
    }

    /** Hands the loop the policy's decision about a request (any thread). */
    pub fn decide(&self, d: Decision) {
        self.inbox.decisions.lock().unwrap_or_else(|e| e.into_inner()).push(d);
        let one: u64 = 1;
        unsafe { write(self.inbox.wake, &one as *const u64 as *const u8, 8) };
    }

    /** Stops the loop (within TICK_MS) and closes every connection. */
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        unsafe { close(self.wake) };
    }
}

/** How a message's body is delimited. */
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug)]
pub struct Head {
    /** Request: method, target, version. Response: version, status, reason. */
    pub start: [String; 3],
    pub headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = String> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
    }

    /** Request body framing (RFC 9112 §6.3): chunked wins over a length; neither is no body. */
    pub fn request_framing(&self) -> Result<Framing, &'static str> {
        if let Some(te) = self.get("transfer-encoding") {
            return if te.trim().eq_ignore_ascii_case("chunked") { Ok(Framing::Chunked) } else { Err("unsupported transfer-encoding") };
        }
        match self.length()? {
            Some(n) => Ok(Framing::Length(n)),
            None => Ok(Framing::None),
        }
    }

    /** Response body framing for a request of `method`. */
    pub fn response_framing(&self, method: &str) -> Result<Framing, &'static str> {
        let status = self.status();
        if method.eq_ignore_ascii_case("HEAD") || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(Framing::None);
        }
        if self.tokens("transfer-encoding").last().as_deref() == Some("chunked") {
            return Ok(Framing::Chunked);
        }
        Ok(match self.length()? {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        })
    }

    fn length(&self) -> Result<Option<u64>, &'static str> {
        let mut found: Option<u64> = None;
        for (k, v) in &self.headers {
            if !k.eq_ignore_ascii_case("content-length") {
                continue;
            }
            let v = v.trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err("bad content-length");
            }
            let n: u64 = v.parse().map_err(|_| "bad content-length")?;
            if found.is_some_and(|f| f != n) {
                return Err("conflicting content-length");
            }
            found = Some(n);
        }
        Ok(found)
    }

    pub fn status(&self) -> u16 {
        self.start[1].parse().unwrap_or(0)
    }

    /** Whether the connection stays open after this message (HTTP/1.1 unless `close`; 1.0 only with keep-alive). */
    pub fn keep_alive(&self) -> bool {
        let version = if self.start[0].starts_with("HTTP/") { &self.start[0] } else { &self.start[2] };
        let mut tokens = self.tokens("connection");
        if version == "HTTP/1.0" {
            tokens.any(|t| t == "keep-alive")
        } else {
            !tokens.any(|t| t == "close")
        }
    }

    /**
     * The end-to-end fields: every field except the connection-specific ones, those the
     * Connection field names, and `drop`; `Via` values are returned apart, to be extended.
     */
    pub fn end_to_end(&self, drop: &[&str]) -> (Vec<(String, String)>, Vec<String>) {
        let named: Vec<String> = self.tokens("connection").collect();
        let mut out = Vec::with_capacity(self.headers.len());
        let mut via = Vec::new();
        for (k, v) in &self.headers {
            let lk = k.to_ascii_lowercase();
            if HOP_BY_HOP.contains(&lk.as_str()) || named.contains(&lk) || drop.contains(&lk.as_str()) {
                continue;
            }
            if lk == "via" {
                via.push(v.clone());
            } else {
                out.push((k.clone(), v.clone()));
            }
        }
        (out, via)
    }
}

/** The end of a head (index after its blank line) in `buf`, or None. */
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/** Parses a head (start line and fields, CRLF lines). None for anything malformed. */
pub fn parse_head(bytes: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split("\r\n");
    let start_line = lines.next()?;
    let mut parts = start_line.splitn(3, ' ');
    let start = [parts.next()?.to_string(), parts.next()?.to_string(), parts.next().unwrap_or("").to_string()];
    let is_response = start[0].starts_with("HTTP/1.");
    if !is_response && !matches!(start[2].as_str(), "HTTP/1.1" | "HTTP/1.0") {
        return None;
    }
    if start[0].is_empty() || start[1].is_empty() {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (k, v) = line.split_once(':')?;
        // A name with spaces or controls is a smuggling attempt; a value with CR or LF cannot occur here.
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return None;
        }
        if v.bytes().any(|b| b == 0 || b == b'\r' || b == b'\n') {
            return None;
        }
        headers.push((k.to_string(), v.trim().to_string()));
    }
    Some(Head { start, headers })
}

/** Chunked transfer coding, decoded as bytes arrive (RFC 9112 §7.1); trailers are read and dropped. */
#[derive(Default)]
pub struct Dechunker {
    state: ChunkState,
}

#[derive(Default, Clone, Copy, PartialEq, Debug)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl Dechunker {
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /**
     * Decodes what it can of `buf` from the front, handing each piece of data to `out`, and
     * returns how many bytes it consumed (the rest is an incomplete line). Err for a broken coding.
     */
    pub fn feed(&mut self, buf: &[u8], out: &mut dyn FnMut(&[u8])) -> Result<usize, &'static str> {
        let mut pos = 0;
        loop {
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Data(n) => {
                    let k = (buf.len() - pos).min(n.min(usize::MAX as u64) as usize);
                    if k == 0 {
                        return Ok(pos);
                    }
                    out(&buf[pos..pos + k]);
                    pos += k;
                    let left = n - k as u64;
                    self.state = if left == 0 { ChunkState::DataEnd } else { ChunkState::Data(left) };
                }
                ChunkState::DataEnd => {
                    let rest = &buf[pos..];
                    if rest.starts_with(b"\r\n") {
                        pos += 2;
                    } else if rest.starts_with(b"\n") {
                        pos += 1;
                    } else if rest.is_empty() || rest == b"\r" {
                        return Ok(pos);
                    } else {
                        return Err("chunk data not followed by CRLF");
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Size | ChunkState::Trailers => {
                    let rest = &buf[pos..];
                    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
                        return if rest.len() > MAX_LINE { Err("chunk line too long") } else { Ok(pos) };
                    };
                    let line = &rest[..lf];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    pos += lf + 1;
                    if self.state == ChunkState::Trailers {
                        if line.is_empty() {
                            self.state = ChunkState::Done;
                        }
                        continue;
                    }
                    let hex_len = line.iter().position(|b| !b.is_ascii_hexdigit()).unwrap_or(line.len());
                    if hex_len == 0 || hex_len > 15 {
                        return Err("bad chunk size");
                    }
                    let after = &line[hex_len..];
                    if !after.is_empty() && !matches!(after[0], b';' | b' ' | b'\t') {
                        return Err("bad chunk size");
                    }
                    let size = u64::from_str_radix(std::str::from_utf8(&line[..hex_len]).map_err(|_| "bad chunk size")?, 16).map_err(|_| "bad chunk size")?;
                    self.state = if size == 0 { ChunkState::Trailers } else { ChunkState::Data(size) };
                }
            }
        }
    }
}

/**
 * The end of the first complete SSE event in `buf` (the index after its blank line: LF LF or
 * CRLF CRLF, whichever ends first), or None. One pass over the bytes: a read may hold many events,
 * and each is found from where the last ended.
 */
pub fn event_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = find_byte(&buf[from..], b'\n') {
        let i = from + k;
        match buf.get(i + 1) {
            Some(b'\n') => return Some(i + 2),
            Some(b'\r') if i > 0 && buf[i - 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
            _ => from = i + 1,
        }
    }
    None
}

/**
 * Whether an SSE event is the usage-only chunk of an OpenAI stream (what `include_usage` adds): its
 * data is one JSON object whose top level has `"choices": []` and a `usage` object.
 */
pub fn is_usage_chunk(event: &[u8]) -> bool {
    // Keys are compared as written, so an event without these bytes has no usage member: most
    // events of a stream are content and end here, unparsed.
    if !contains(event, b"\"usage\"") {
        return false;
    }
    // An event that is not UTF-8 is not what the engine writes for usage: it reaches the client as sent.
    if std::str::from_utf8(event).is_err() {
        return false;
    }
    let Some(data) = sse_data(event) else { return false };
    let j = &data[..];
    let Some(m) = members(j) else { return false };
    let choices_empty = m.iter().any(|(k, v)| *k == b"choices" && j[v.start] == b'[' && skip_ws(j, v.start + 1) == v.end - 1);
    let usage = m.iter().any(|(k, v)| *k == b"usage" && j[v.start] == b'{');
    choices_empty && usage
}

/** One member of a JSON object: its key without the quotes, and its value's range in the object's text. */
pub type Member<'a> = (&'a [u8], std::ops::Range<usize>);

/**
 * The members of one JSON object (each key without its quotes, and its value's range), or None
 * where `j` is not one object or JSON.parse would throw on it (sse.rs's reader: the Node proxy
 * leaves such a body as it came).
 */
pub fn members(j: &[u8]) -> Option<Vec<Member<'_>>> {
    let mut i = skip_ws(j, 0);
    if j.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(j, i + 1);
    let mut out = Vec::new();
    if j.get(i) == Some(&b'}') {
        return (skip_ws(j, i + 1) == j.len()).then_some(out);
    }
    loop {
        if j.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(j, i)?;
        let key = &j[i + 1..key_end - 1];
        i = skip_ws(j, key_end);
        if j.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(j, i + 1);
        let end = value_end(j, i)?;
        out.push((key, i..end));
        i = skip_ws(j, end);
        match j.get(i) {
            Some(b',') => i = skip_ws(j, i + 1),
            Some(b'}') => return (skip_ws(j, i + 1) == j.len()).then_some(out),
            _ => return None,
        }
    }
}

/** What to do about `include_usage` for a request, as the Node proxy's inspectBody decides it. */
#[derive(Debug, PartialEq)]
pub enum UsagePlan {
    /** Not a streamed chat or text completion, or the client asked for usage itself. */
    Leave,
    /** The body with `stream_options.include_usage` added (the client named no `stream_options`). */
    Inject(Vec<u8>),
    /** The client's `stream_options` lacks `include_usage: true`: JS rewrites the body. */
    AskJs,
}

/**
 * The top-level members of a body that usage_plan and policy_body read, parsed once for both: None
 * for a request whose body neither reads (not a POST to a measured route), or that is not one object.
 */
pub fn request_members<'a>(method: &str, target: &str, body: &'a [u8]) -> Option<Vec<Member<'a>>> {
    if method != "POST" || route_of(target) == Route::Other {
        return None;
    }
    members(body)
}

/** `m` is request_members of the same request. */
pub fn usage_plan(method: &str, target: &str, body: &[u8], m: Option<&[Member]>) -> UsagePlan {
    let path = target.split('?').next().unwrap_or("");
    if method != "POST" || !matches!(path, "/v1/chat/completions" | "/v1/completions") {
        return UsagePlan::Leave;
    }
    let Some(m) = m else { return UsagePlan::Leave };
    if !m.iter().any(|(k, v)| *k == b"stream" && &body[v.clone()] == b"true") {
        return UsagePlan::Leave;
    }
    match m.iter().find(|(k, _)| *k == b"stream_options") {
        Some((_, v)) => match members(&body[v.clone()]) {
            Some(opts) if opts.iter().any(|(k, ov)| *k == b"include_usage" && &body[v.start + ov.start..v.start + ov.end] == b"true") => UsagePlan::Leave,
            _ => UsagePlan::AskJs,
        },
        None => {
            let close = body.iter().rposition(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')).unwrap_or(0);
            let mut out = Vec::with_capacity(body.len() + 40);
            out.extend_from_slice(&body[..close]);
            out.extend_from_slice(b",\"stream_options\":{\"include_usage\":true}");
            out.extend_from_slice(&body[close..]);
            UsagePlan::Inject(out)
        }
    }
}

/** Top-level members of a request body that routes.ts's inspectBody reads for the request's facts. */
const FACT_KEYS: [&[u8]; 8] =
    [b"model", b"stream", b"stream_options", b"max_completion_tokens", b"max_tokens", b"max_output_tokens", b"temperature", b"parameters"];
/** The members its prompt hash is taken over (routes.ts's promptMaterial). */
const PROMPT_KEYS: [&[u8]; 4] = [b"messages", b"prompt", b"input", b"inputs"];

/**
 * What the policy is handed of a body the loop has sent already. JS reads only a few members of it
 * (FACT_KEYS, and the prompt when it hashes prompts), so it gets a JSON object of those alone: a
 * long prompt is neither copied to JS nor parsed there, and no open stream's garbage holds one.
 * Nothing for a request whose body JS does not read (not a POST to a measured route); the whole
 * body where it is not one JSON object, which JS counts as malformed, as the Node proxy does. A key
 * written with an escape is kept, since JSON.parse may read it as one of these. `m` is
 * request_members of the same request.
 */
pub fn policy_body(method: &str, target: &str, body: &[u8], m: Option<&[Member]>, keep_prompt: bool) -> Vec<u8> {
    if method != "POST" || route_of(target) == Route::Other {
        return Vec::new();
    }
    let Some(m) = m else { return body.to_vec() };
    let mut out = vec![b'{'];
    for (key, value) in m {
        let wanted = FACT_KEYS.contains(key) || (keep_prompt && PROMPT_KEYS.contains(key)) || key.contains(&b'\\');
        if !wanted {
            continue;
        }
        if out.len() > 1 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(key);
        out.extend_from_slice(b"\":");
        out.extend_from_slice(&body[value.clone()]);
    }
    out.push(b'}');
    out
}

/** The client's `x-request-id` when it is a plain token (as the Node proxy's requestIdOf), else a new UUID. */
pub fn request_id(headers: &[(String, String)]) -> String {
    let given = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-request-id")).map(|(_, v)| v.as_str());
    if let Some(v) = given {
        if (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')) {
            return v.to_string();
        }
    }
    uuid_v4(random_id_bytes().unwrap_or_else(fallback_id_bytes))
}

/** 16 random bytes for an id, from a batch that one getrandom(2) call fills for 16 ids rather than a call per request. */
fn random_id_bytes() -> Option<[u8; 16]> {
    thread_local! {
        static BATCH: std::cell::RefCell<([u8; 256], usize)> = const { std::cell::RefCell::new(([0; 256], 256)) };
    }
    BATCH.with(|batch| {
        let (bytes, used) = &mut *batch.borrow_mut();
        if *used == bytes.len() {
            if !fill_random(bytes) {
                return None;
            }
            *used = 0;
        }
        let mut r = [0u8; 16];
        r.copy_from_slice(&bytes[*used..*used + 16]);
        *used += 16;
        Some(r)
    })
}

/** Fills `buf` from getrandom(2); false when the kernel would not (ENOSYS, or an error on a fresh boot). */
fn fill_random(buf: &mut [u8]) -> bool {
    let mut filled = 0;
    while filled < buf.len() {
        let n = unsafe { getrandom(buf[filled..].as_mut_ptr(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            // No bytes and no error would otherwise read a stale errno, and could spin.
            return false;
        }
    }
    true
}

/**
 * Bytes no other id from this process has had, where getrandom fails: a per-process counter and the
 * monotonic clock. Unguessable they are not, but request ids only correlate, and must not collide.
 */
fn fallback_id_bytes() -> [u8; 16] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let started = *PROCESS_START.get_or_init(Instant::now);
    let nanos = started.elapsed().as_nanos() as u64 ^ ((std::process::id() as u64) << 32);
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&nanos.to_be_bytes());
    r[8..].copy_from_slice(&n.to_be_bytes());
    r
}

static PROCESS_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/** The RFC 9562 text form of 16 bytes, with the version 4 and variant bits set. */
fn uuid_v4(mut r: [u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    r[6] = (r[6] & 0x0f) | 0x40;
    r[8] = (r[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, b) in r.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0x0f) as usize] as char);
    }
    out
}

/** A partial SSE event held back longer than this is passed on as it is (no event is that large). */
const MAX_PARTIAL_EVENT: usize = 1024 * 1024;

/** Takes the usage-only events out of an SSE body as it passes; only a partial event is held back. */
#[derive(Default)]
pub struct UsageStrip {
    held: Vec<u8>,
}

impl UsageStrip {
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.held.is_empty() {
            // The usual read: whole events, passed on without first being copied to be held.
            let used = strip_events(data, out);
            self.held.extend_from_slice(&data[used..]);
        } else {
            self.held.extend_from_slice(data);
            let used = strip_events(&self.held, out);
            self.held.drain(..used);
        }
        if self.held.len() > MAX_PARTIAL_EVENT {
            out.append(&mut self.held);
        }
    }

    /** What is still held (an unfinished last event), at the end of the body. */
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.held);
    }
}

/** Appends the complete events of `buf` but usage-only ones to `out`; returns the bytes they took. */
fn strip_events(buf: &[u8], out: &mut Vec<u8>) -> usize {
    let mut start = 0;
    while let Some(end) = event_end(&buf[start..]) {
        let event = &buf[start..start + end];
        if !is_usage_chunk(event) {
            out.extend_from_slice(event);
        }
        start += end;
    }
    start
}

/** Appends `data` as one chunk of chunked coding. */
pub fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn write_head(out: &mut Vec<u8>, start: &str, fields: &[(String, String)]) {
    out.extend_from_slice(start.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (k, v) in fields {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/** Sets each of `extra`, in place of any field of the same name. */
fn set_fields(fields: &mut Vec<(String, String)>, extra: &[(String, String)]) {
    for (k, v) in extra {
        fields.retain(|(f, _)| !f.eq_ignore_ascii_case(k));
        fields.push((k.clone(), v.clone()));
    }
}

fn via(mut prior: Vec<String>) -> (String, String) {
    prior.push(VIA.to_string());
    ("via".to_string(), prior.join(", "))
}

/** The head the engine gets for `req` with a body of `body_len` bytes. */
/**
 * A W3C traceparent the engine may join: version 00 exactly (a later version's prefix is read as
 * 00 and its extra fields kept), a trace id and a parent id not all zero, lower-case hex.
 */
pub fn valid_traceparent(v: &str) -> bool {
    let v = v.trim();
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let p: Vec<&str> = v.split('-').collect();
    if p.len() < 4 || p[0].len() != 2 || p[1].len() != 32 || p[2].len() != 16 || p[3].len() != 2 {
        return false;
    }
    if !p[..4].iter().all(|s| hex(s)) || p[0] == "ff" || (p[0] == "00" && p.len() != 4) {
        return false;
    }
    p[1].bytes().any(|b| b != b'0') && p[2].bytes().any(|b| b != b'0')
}

pub fn upstream_head(req: &Head, host: &str, body_len: usize, extra: &[(String, String)]) -> Vec<u8> {
    let (mut fields, prior) = req.end_to_end(&["host", "content-length", "expect"]);
    // An invalid trace context is not passed on, nor the tracestate that rides with it (as the Node proxy's propagator does).
    let parents: Vec<&str> = fields.iter().filter(|(k, _)| k.eq_ignore_ascii_case("traceparent")).map(|(_, v)| v.as_str()).collect();
    if !(parents.is_empty() || parents.len() == 1 && valid_traceparent(parents[0])) {
        fields.retain(|(k, _)| !k.eq_ignore_ascii_case("traceparent") && !k.eq_ignore_ascii_case("tracestate"));
    }
    fields.insert(0, ("host".to_string(), host.to_string()));
    let has_body = body_len > 0 || req.get("content-length").is_some() || req.get("transfer-encoding").is_some();
    if has_body {
        fields.push(("content-length".to_string(), body_len.to_string()));
    }
    set_fields(&mut fields, extra);
    fields.push(via(prior));
    let mut out = Vec::with_capacity(512 + body_len);
    write_head(&mut out, &format!("{} {} HTTP/1.1", req.start[0], req.start[1]), &fields);
    out
}

/** The head the client gets for the engine's `res`, and how its body is framed to the client. */
pub fn client_head(res: &Head, upstream: Framing, client_keep_alive: bool, client_http10: bool, extra: &[(String, String)]) -> (Vec<u8>, Framing, bool) {
    let (mut fields, prior) = res.end_to_end(&["content-length"]);
    set_fields(&mut fields, extra);
    fields.push(via(prior));
    let (framing, keep) = match upstream {
        Framing::None => {
            if let Some(n) = res.get("content-length") {
                fields.push(("content-length".to_string(), n.to_string()));
            }
            (Framing::None, client_keep_alive)
        }
        Framing::Length(n) => {
            fields.push(("content-length".to_string(), n.to_string()));
            (Framing::Length(n), client_keep_alive)
        }
        // An HTTP/1.0 client cannot read chunked coding: its body ends when the connection does.
        Framing::Chunked | Framing::UntilClose if client_http10 => (Framing::UntilClose, false),
        Framing::Chunked | Framing::UntilClose => {
            fields.push(("transfer-encoding".to_string(), "chunked".to_string()));
            (Framing::Chunked, client_keep_alive)
        }
    };
    fields.push(("connection".to_string(), if keep { "keep-alive" } else { "close" }.to_string()));
    let mut out = Vec::with_capacity(512);
    write_head(&mut out, &format!("HTTP/1.1 {} {}", res.start[1], res.start[2]), &fields);
    (out, framing, keep)
}

/**
 * A short JSON error of the proxy's own, as the Node proxy writes it. `request_id` is a plain token
 * (request_id() makes it so), which needs no JSON escaping.
 */
fn refusal(out: &mut Vec<u8>, status: u16, reason: &str, message: &str, close: bool, request_id: Option<&str>) {
    let id = request_id.map(|r| format!(",\"request_id\":\"{r}\"")).unwrap_or_default();
    let body = format!("{{\"error\":{{\"message\":\"{message}\",\"type\":\"infertel_proxy\"{id}}}}}");
    let mut fields = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("content-length".to_string(), body.len().to_string()),
        ("via".to_string(), VIA.to_string()),
        ("connection".to_string(), if close { "close" } else { "keep-alive" }.to_string()),
    ];
    if let Some(r) = request_id {
        fields.push(("x-request-id".to_string(), r.to_string()));
    }
    write_head(out, &format!("HTTP/1.1 {status} {reason}"), &fields);
    out.extend_from_slice(body.as_bytes());
}

/** Where a client connection is in its current exchange. */
enum Phase {
    /** Reading a request head. */
    Head,
    Body {
        req: Head,
        framing: Framing,
        dechunk: Dechunker,
        body: Vec<u8>,
    },
    /** With the policy, waiting for its Decision. */
    Admitting {
        req: Head,
        body: Vec<u8>,
    },
    /** The request is with the engine; its answer's head has not come. */
    Waiting {
        method: String,
        keep: bool,
        http10: bool,
    },
    Streaming {
        from: Framing,
        to: Framing,
        left: u64,
        dechunk: Dechunker,
        keep: bool,
        engine_keep: bool,
    },
    /** After a 413: what the client still sends is read and dropped, so it sees the answer rather than a reset. */
    Draining,
    /** Sending what is queued, then closing. */
    Closing,
}

struct Conn {
    client: TcpStream,
    /** Read from the client, not yet used. */
    cin: Vec<u8>,
    /** For the client, not yet written. */
    cout: Vec<u8>,
    up: Option<EngineSocket>,
    /** `up` is a connect the engine has not yet taken: nothing is written to it until it has. */
    connecting: bool,
    uin: Vec<u8>,
    uout: Vec<u8>,
    phase: Phase,
    /** The interest last given to epoll for each side; None while not registered. */
    client_interest: Option<u32>,
    up_interest: Option<u32>,
    /**
     * The client sent more while its request was still being answered (a pipelined request): its
     * interest drops EPOLLIN until the answer is done. Until then, a connection keeps the interest
     * it read its request with, so a request and its answer cost no epoll calls.
     */
    client_held: bool,
    /** The exchange in progress, numbered across the loop (0 before the first): a deadline belongs to one exchange. */
    exchange: u64,
    /** Fields the policy adds to the client's answer to the current request. */
    client_extra: Vec<(String, String)>,
    /** The policy asked the engine for a usage chunk the client did not ask for: take it out of an SSE answer. */
    strip_usage: bool,
    /** Set for an answer being stripped (a 2xx event stream). */
    strip: Option<UsageStrip>,
    /** The policy's token for the exchange in progress, until its end is told. */
    token: Option<u64>,
    /** When the current request's head was complete. */
    head_at_ms: f64,
    /** Body bytes of the current answer still to copy for the policy, and whether any read was told yet. */
    tap_left: usize,
    tapped: bool,
    /** The current request's route, and the reading of its answer when it is read here. */
    route: Route,
    reading: Option<StreamReading>,
    /** The current wait's entry in the loop's deadlines (an engine's answer, a policy's decision, a drain). */
    deadline: Option<Deadline>,
}

/** (when, slot, exchange) */
type Deadline = (Instant, usize, u64);

/** A connection to the engine, and the slot its epoll token names (see Loop::up_owner). */
struct EngineSocket {
    stream: TcpStream,
    slot: usize,
}

fn engine_token(slot: usize) -> u64 {
    ((slot as u64) << 1) | 1
}

enum Step {
    Progress,
    Wait,
}

struct Loop {
    epfd: i32,
    listener: TcpListener,
    target: SocketAddr,
    host: String,
    max_body: usize,
    upstream_timeout: Duration,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /** Slots closed during this batch of events: reused only after it, so no later event of the batch reaches a new connection. */
    freed: Vec<usize>,
    /**
     * Engine sockets by slot: the connection each serves, None while idle or closed. Epoll names an
     * engine socket by its slot rather than by its client's connection, so a socket stays registered
     * as it moves through the pool from one client to the next.
     */
    up_owner: Vec<Option<usize>>,
    up_free: Vec<usize>,
    /** Engine socket slots closed during this batch of events, reused only after it (as `freed`). */
    up_freed: Vec<usize>,
    /** Engine connections in the pool, each registered with IDLE_WANT. */
    idle: Vec<EngineSocket>,
    /**
     * (when, slot, exchange): at most one per connection, taken out when its wait ends, so a
     * finished exchange leaves nothing behind to wake the loop.
     */
    deadlines: BTreeSet<Deadline>,
    next_exchange: u64,
    stats: Arc<Stats>,
    scratch: Vec<u8>,
    admit: Option<Admit>,
    free_returned: Option<FreeReturned>,
    tell_after: bool,
    keep_prompt: bool,
    max_concurrent: usize,
    reading_rules: Option<Arc<ReadingRules>>,
    inbox: Arc<Inbox>,
    /** Requests with the policy: token to slot. */
    admitting: std::collections::HashMap<u64, usize>,
    /** Requests to hand the policy at the end of this turn of the loop. */
    pending: Vec<Admission>,
    /** What was seen of answers this turn, for the policy. */
    taps: Vec<Tap>,
    /** The bytes of this turn's Data taps, end to end. */
    tap_bytes: Vec<u8>,
    next_token: u64,
}

/** Whether the peer has sent something or hung up: for an idle engine connection, that it is not reusable. */
fn readable_now(s: &TcpStream) -> bool {
    let mut p = PollFd { fd: s.as_raw_fd(), events: POLLIN | POLLRDHUP, revents: 0 };
    unsafe { poll(&mut p, 1, 0) != 0 }
}

/** Reads once into `scratch` and appends what came to `buf` (a read straight into `buf` would zero-fill its spare room first, on every read). */
fn read_into(s: &mut TcpStream, scratch: &mut [u8], buf: &mut Vec<u8>) -> io::Result<usize> {
    let n = s.read(scratch)?;
    buf.extend_from_slice(&scratch[..n]);
    Ok(n)
}

/**
 * Starts a connect to `to` and returns without waiting for it: the loop learns its end from the
 * socket (writable, or an error). std's connects block, and a blocking one held up every
 * connection of the loop for as long as the engine took to answer its SYN: a second or more when
 * an engine's accept queue is full and the kernel drops the SYN until its retransmission.
 */
fn connect_started(to: &SocketAddr) -> io::Result<TcpStream> {
    // struct sockaddr_in or sockaddr_in6, as <netinet/in.h> lays them out.
    let mut addr = [0u8; 28];
    let (family, len) = match to {
        SocketAddr::V4(a) => {
            addr[4..8].copy_from_slice(&a.ip().octets());
            (AF_INET, 16)
        }
        SocketAddr::V6(a) => {
            addr[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
            addr[8..24].copy_from_slice(&a.ip().octets());
            addr[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
            (AF_INET6, 28)
        }
    };
    addr[0..2].copy_from_slice(&family.to_ne_bytes());
    addr[2..4].copy_from_slice(&to.port().to_be_bytes());
    let fd = unsafe { socket(i32::from(family), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // Owned from here, so that an error below closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    if unsafe { connect(fd, addr.as_ptr(), len) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(stream)
}

/** Writes what it can of `buf` (the rest stays). Err when the peer is gone. */
fn flush(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match s.write(&buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.drain(..done);
    give_back_room(buf);
    Ok(())
}

/** Room an emptied buffer may keep for the next request or event; past it, the room is given back. */
const KEEP_ROOM: usize = 16 * 1024;

/**
 * An emptied buffer that grew past KEEP_ROOM (a large request body, a slow client's backlog) gives
 * its room back: a connection holding a long stream open would otherwise keep, for the stream's
 * whole life, the room its request needed. Smaller buffers keep theirs, so small requests on a
 * kept connection allocate nothing.
 */
fn give_back_room(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > KEEP_ROOM {
        *buf = Vec::new();
    }
}

impl Loop {
    fn ctl(&self, op: i32, fd: i32, events: u32, token: u64) -> io::Result<()> {
        let mut ev = EpollEvent { events, data: token };
        if unsafe { epoll_ctl(self.epfd, op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut events = vec![EpollEvent { events: 0, data: 0 }; 256];
        let mut next_hand = Instant::now();
        while !stop.load(Ordering::Acquire) {
            let mut timeout = match self.deadlines.first() {
                // Rounded up, as below: a deadline under 1 ms away would otherwise spin the loop until it passed.
                Some((at, _, _)) => at.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000).min(TICK_MS as u128) as i32,
                None => TICK_MS,
            };
            if !self.pending.is_empty() || !self.taps.is_empty() {
                // Rounded up: a wait of 0 ms would spin until the hand-over is due.
                let due = next_hand.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000) as i32;
                timeout = timeout.min(due);
            }
            let n = unsafe { epoll_wait(self.epfd, events.as_mut_ptr(), events.len() as i32, timeout) };
            for ev in events.iter().take(n.max(0) as usize) {
                let (token, flags) = (ev.data, ev.events);
                if token == LISTENER {
                    self.accept();
                } else if token == WAKE {
                    self.decided();
                } else if token & 1 == 1 {
                    self.on_engine_event((token >> 1) as usize, flags);
                } else {
                    self.on_event((token >> 1) as usize, false, flags);
                }
            }
            self.expire();
            let now = Instant::now();
            let urgent = self.pending.iter().any(|a| a.waits);
            if (urgent || now >= next_hand) && (!self.pending.is_empty() || !self.taps.is_empty()) {
                if let Some(admit) = &self.admit {
                    admit(std::mem::take(&mut self.pending), std::mem::take(&mut self.taps), std::mem::take(&mut self.tap_bytes));
                }
                next_hand = now + HAND_EVERY;
            }
            // Each turn rather than at each hand-over: once streams go quiet there may be no next
            // hand-over for a while, and a batch of request bodies would wait for it.
            if let Some(free) = &self.free_returned {
                free();
            }
            self.free.append(&mut self.freed);
            self.up_free.append(&mut self.up_freed);
        }
        for i in 0..self.conns.len() {
            self.close(i);
        }
    }

    fn accept(&mut self) {
        loop {
            let client = match self.listener.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            if client.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = client.set_nodelay(true);
            let slot = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            self.conns[slot] = Some(Conn {
                client,
                cin: Vec::new(),
                cout: Vec::new(),
                up: None,
                connecting: false,
                uin: Vec::new(),
                uout: Vec::new(),
                phase: Phase::Head,
                client_interest: None,
                up_interest: None,
                client_held: false,
                exchange: 0,
                client_extra: Vec::new(),
                strip_usage: false,
                strip: None,
                token: None,
                head_at_ms: 0.0,
                tap_left: 0,
                tapped: false,
                route: Route::Other,
                reading: None,
                deadline: None,
            });
            self.stats.open.fetch_add(1, Ordering::Relaxed);
            self.settle(slot);
        }
    }

    fn on_event(&mut self, i: usize, engine_side: bool, flags: u32) {
        let scratch = &mut self.scratch[..];
        let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else { return };
        if engine_side {
            let Some(up) = c.up.as_mut().map(|u| &mut u.stream) else { return };
            if c.connecting {
                if flags & (EPOLLOUT | EPOLLERR | EPOLLHUP) == 0 {
                    return;
                }
                if flags & (EPOLLERR | EPOLLHUP) != 0 || !matches!(up.take_error(), Ok(None)) {
                    self.engine_failed(i, "upstream_refused");
                    return self.settle(i);
                }
                c.connecting = false;
                self.stats.engine_connections.fetch_add(1, Ordering::Relaxed);
            }
            if flags & EPOLLOUT != 0 && flush(up, &mut c.uout).is_err() {
                return self.engine_broke(i);
            }
            // A hang-up is reported whatever the interest: what the engine left is read even past HIGH_WATER
            // (no more than its socket buffer), or the event would come back on every turn.
            let hung_up = flags & (EPOLLHUP | EPOLLERR) != 0;
            if (flags & (EPOLLIN | EPOLLRDHUP) != 0 && c.cout.len() < HIGH_WATER) || hung_up {
                match read_into(up, scratch, &mut c.uin) {
                    Ok(0) => return self.engine_ended(i),
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                    Err(_) => return self.engine_broke(i),
                }
            }
        } else {
            let gone = flags & (EPOLLRDHUP | EPOLLHUP | EPOLLERR) != 0;
            if gone && matches!(c.phase, Phase::Admitting { .. } | Phase::Waiting { .. } | Phase::Streaming { .. }) {
                // Nobody will read the answer: closing the engine connection cancels the request there.
                self.stats.client_abort.fetch_add(1, Ordering::Relaxed);
                return self.close(i);
            }
            if flags & EPOLLOUT != 0 && flush(&mut c.client, &mut c.cout).is_err() {
                return self.close(i);
            }
            if flags & EPOLLIN != 0 && matches!(c.phase, Phase::Admitting { .. } | Phase::Waiting { .. } | Phase::Streaming { .. }) {
                c.client_held = true;
            }
            if flags & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR) != 0 && matches!(c.phase, Phase::Head | Phase::Body { .. } | Phase::Draining) {
                match read_into(&mut c.client, scratch, &mut c.cin) {
                    Ok(0) => {
                        // The client has closed its side: a partial request is abandoned, and no answer would be read.
                        if let Phase::Body { .. } = c.phase {
                            self.stats.client_abort.fetch_add(1, Ordering::Relaxed);
                        }
                        return self.close(i);
                    }
                    Ok(_) => {
                        if matches!(c.phase, Phase::Draining) {
                            c.cin.clear();
                        }
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                    Err(_) => return self.close(i),
                }
            }
        }
        self.settle(i);
    }

    /** Moves connection `i` as far as its buffers allow, writes what it can, and sets its epoll interest. */
    fn settle(&mut self, i: usize) {
        self.advance(i);
        let Some(c) = self.conns[i].as_mut() else { return };
        if !c.cout.is_empty() && flush(&mut c.client, &mut c.cout).is_err() {
            return self.close(i);
        }
        if let (Some(up), false) = (c.up.as_mut().map(|u| &mut u.stream), c.connecting) {
            if !c.uout.is_empty() && flush(up, &mut c.uout).is_err() {
                return self.engine_broke(i);
            }
        }
        if matches!(c.phase, Phase::Closing) && c.cout.is_empty() {
            return self.close(i);
        }
        let client_want = match c.phase {
            Phase::Head | Phase::Body { .. } | Phase::Draining => {
                c.client_held = false;
                EPOLLIN | EPOLLRDHUP
            }
            Phase::Admitting { .. } | Phase::Waiting { .. } | Phase::Streaming { .. } if c.client_held => EPOLLRDHUP,
            Phase::Admitting { .. } | Phase::Waiting { .. } | Phase::Streaming { .. } => EPOLLIN | EPOLLRDHUP,
            Phase::Closing => 0,
        } | if c.cout.is_empty() { 0 } else { EPOLLOUT };
        let up_want = match c.up {
            // Writable once the engine has taken the connect (an error is reported whatever the interest).
            Some(_) if c.connecting => EPOLLOUT,
            Some(_) => (if c.cout.len() < HIGH_WATER { EPOLLIN | EPOLLRDHUP } else { 0 }) | if c.uout.is_empty() { 0 } else { EPOLLOUT },
            None => 0,
        };
        let (cfd, cgot) = (c.client.as_raw_fd(), c.client_interest);
        let up_fd = c.up.as_ref().map(|u| (u.stream.as_raw_fd(), engine_token(u.slot)));
        let ugot = c.up_interest;
        let token = (i as u64) << 1;
        // An interest of 0 stays registered (with no events) rather than being removed and added again.
        if cgot != Some(client_want) {
            let _ = self.ctl(if cgot.is_none() { EPOLL_CTL_ADD } else { EPOLL_CTL_MOD }, cfd, client_want, token);
        }
        if let Some((ufd, up_token)) = up_fd {
            if ugot != Some(up_want) {
                let _ = self.ctl(if ugot.is_none() { EPOLL_CTL_ADD } else { EPOLL_CTL_MOD }, ufd, up_want, up_token);
            }
        }
        let c = self.conns[i].as_mut().expect("still open");
        c.client_interest = Some(client_want);
        if up_fd.is_some() {
            c.up_interest = Some(up_want);
        }
    }

    /** Steps connection `i`'s exchange until its buffers allow no more. */
    fn advance(&mut self, i: usize) {
        while let Step::Progress = self.step(i) {}
    }

    /** One move of connection `i`'s exchange, from what its buffers hold. */
    fn step(&mut self, i: usize) -> Step {
        let max_body = self.max_body;
        let c = self.conns[i].as_mut().expect("open");
        match &mut c.phase {
            Phase::Head => {
                let Some(end) = head_end(&c.cin) else {
                    if c.cin.len() > MAX_HEAD {
                        self.stats.bad_request.fetch_add(1, Ordering::Relaxed);
                        refusal(&mut c.cout, 431, "Request Header Fields Too Large", "request head too large", true, None);
                        c.phase = Phase::Closing;
                        return Step::Progress;
                    }
                    return Step::Wait;
                };
                let parsed = parse_head(&c.cin[..end]);
                c.cin.drain(..end);
                c.head_at_ms = monotonic_ms();
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                let Some((req, framing)) = parsed.and_then(|r| r.request_framing().ok().map(|f| (r, f))) else {
                    self.stats.bad_request.fetch_add(1, Ordering::Relaxed);
                    refusal(&mut c.cout, 400, "Bad Request", "malformed request", true, None);
                    c.phase = Phase::Closing;
                    return Step::Progress;
                };
                if matches!(framing, Framing::Length(n) if n > max_body as u64) {
                    return self.too_large(i, req);
                }
                if req.tokens("expect").any(|t| t == "100-continue") {
                    c.cout.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                c.phase = Phase::Body { req, framing, dechunk: Dechunker::default(), body: Vec::new() };
                Step::Progress
            }
            Phase::Body { framing, dechunk, body, .. } => {
                let complete = match *framing {
                    Framing::None | Framing::UntilClose => true,
                    Framing::Length(n) => {
                        if (c.cin.len() as u64) < n {
                            return Step::Wait;
                        }
                        *body = c.cin.drain(..n as usize).collect();
                        give_back_room(&mut c.cin);
                        true
                    }
                    Framing::Chunked => {
                        let mut over = false;
                        let fed = dechunk.feed(&c.cin, &mut |d| {
                            if body.len() + d.len() > max_body {
                                over = true;
                            } else {
                                body.extend_from_slice(d);
                            }
                        });
                        match fed {
                            Err(_) => {
                                self.stats.bad_request.fetch_add(1, Ordering::Relaxed);
                                refusal(&mut c.cout, 400, "Bad Request", "malformed chunked body", true, None);
                                c.phase = Phase::Closing;
                                return Step::Progress;
                            }
                            Ok(used) => {
                                c.cin.drain(..used);
                                give_back_room(&mut c.cin);
                            }
                        }
                        if over {
                            let Phase::Body { req, .. } = std::mem::replace(&mut c.phase, Phase::Draining) else { unreachable!() };
                            return self.too_large(i, req);
                        }
                        dechunk.done()
                    }
                };
                if !complete {
                    return Step::Wait;
                }
                let Phase::Body { req, body, .. } = std::mem::replace(&mut c.phase, Phase::Head) else { unreachable!() };
                // Each connection holds at most one request in progress: with fewer connection
                // slots than the limit there is nothing to count, and the count is per request.
                if self.conns.len() >= self.max_concurrent && self.in_progress() >= self.max_concurrent {
                    self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
                    let request_id = self.told_refused(i, &req, "overloaded");
                    let c = self.conns[i].as_mut().expect("open");
                    refusal(&mut c.cout, 503, "Service Unavailable", "proxy overloaded", !req.keep_alive(), Some(&request_id));
                    if !req.keep_alive() {
                        c.phase = Phase::Closing;
                    }
                    return Step::Progress;
                }
                let c = self.conns[i].as_mut().expect("open");
                if self.admit.is_none() {
                    return self.send(i, req, body, Vec::new(), Vec::new());
                }
                self.next_token += 1;
                let token = self.next_token;
                c.token = Some(token);
                let (m, plan) = if self.tell_after {
                    let m = request_members(&req.start[0], &req.start[1], &body);
                    let plan = usage_plan(&req.start[0], &req.start[1], &body, m.as_deref());
                    (m, plan)
                } else {
                    (None, UsagePlan::AskJs)
                };
                if plan != UsagePlan::AskJs {
                    let request_id = request_id(&req.headers);
                    let told = policy_body(&req.start[0], &req.start[1], &body, m.as_deref(), self.keep_prompt);
                    let (sent, usage_injected) = match plan {
                        UsagePlan::Inject(b) => (b, true),
                        _ => (body, false),
                    };
                    let (method, target, headers) = (req.start[0].clone(), req.start[1].clone(), req.headers.clone());
                    self.pending.push(Admission {
                        token,
                        waits: false,
                        request_id: request_id.clone(),
                        usage_injected,
                        answered: false,
                        at_ms: c.head_at_ms,
                        method,
                        target,
                        headers,
                        body: told,
                    });
                    let id_field = vec![("x-request-id".to_string(), request_id)];
                    let step = self.send(i, req, sent, id_field.clone(), id_field);
                    if let Some(c) = self.conns[i].as_mut() {
                        c.strip_usage = usage_injected;
                    }
                    return step;
                }
                self.pending.push(Admission {
                    token,
                    waits: true,
                    request_id: String::new(),
                    usage_injected: false,
                    answered: false,
                    at_ms: c.head_at_ms,
                    method: req.start[0].clone(),
                    target: req.start[1].clone(),
                    headers: req.headers.clone(),
                    body: body.clone(),
                });
                c.phase = Phase::Admitting { req, body };
                self.admitting.insert(token, i);
                // A policy that does not answer within the engine's timeout does not hold the client for ever.
                self.next_exchange += 1;
                c.exchange = self.next_exchange;
                self.set_deadline(i, Instant::now() + self.upstream_timeout);
                Step::Wait
            }
            Phase::Waiting { .. } => {
                let Some(end) = head_end(&c.uin) else {
                    return if c.uin.len() > MAX_HEAD { self.engine_failed(i, "upstream_bad_answer") } else { Step::Wait };
                };
                let Some(res) = parse_head(&c.uin[..end]) else { return self.engine_failed(i, "upstream_bad_answer") };
                c.uin.drain(..end);
                // 1xx interim answers (the engine's own 100 Continue) are not passed on: the body is already sent.
                if (100..200).contains(&res.status()) && res.status() != 101 {
                    return Step::Progress;
                }
                self.clear_deadline(i);
                let c = self.conns[i].as_mut().expect("open");
                let Phase::Waiting { method, keep, http10 } = &c.phase else { unreachable!() };
                let Ok(from) = res.response_framing(method) else { return self.engine_failed(i, "upstream_bad_answer") };
                let engine_keep = res.keep_alive() && from != Framing::UntilClose;
                let sse = res.get("content-type").is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/event-stream"));
                let ok = (200..300).contains(&res.status());
                let rules = self.reading_rules.as_ref().filter(|_| c.token.is_some() && sse && ok && c.route != Route::Other);
                c.reading = rules.map(|r| StreamReading::new(c.route, r.clone()));
                if let Some(token) = c.token {
                    self.taps.push(Tap {
                        token,
                        at_ms: monotonic_ms(),
                        what: Seen::Head { status: res.status(), headers: res.headers.clone(), read: c.reading.is_some() },
                    });
                }
                c.strip = (c.strip_usage && sse && ok).then(UsageStrip::default);
                // The policy reads every event of a 2xx stream (unless it is read here), a JSON body's usage up to a size, and nothing of an error body but its time.
                c.tap_left = if !ok || c.reading.is_some() {
                    0
                } else if sse {
                    usize::MAX
                } else {
                    MAX_TAPPED_BODY
                };
                c.tapped = c.reading.is_some();
                // A stripped body is shorter than the engine's length says: the client gets it chunked.
                let client_from = if c.strip.is_some() && matches!(from, Framing::Length(_)) { Framing::Chunked } else { from };
                let (head, to, keep) = client_head(&res, client_from, *keep, *http10, &c.client_extra);
                c.cout.extend_from_slice(&head);
                let left = if let Framing::Length(n) = from { n } else { 0 };
                c.phase = Phase::Streaming { from, to, left, dechunk: Dechunker::default(), keep, engine_keep };
                Step::Progress
            }
            Phase::Streaming { from, to, left, dechunk, keep, engine_keep } => {
                let mut data: Vec<u8> = Vec::new();
                let done = match *from {
                    Framing::None => true,
                    Framing::Length(_) => {
                        let k = c.uin.len().min((*left).min(usize::MAX as u64) as usize);
                        data.extend(c.uin.drain(..k));
                        *left -= k as u64;
                        *left == 0
                    }
                    Framing::Chunked => match dechunk.feed(&c.uin, &mut |d| data.extend_from_slice(d)) {
                        Ok(used) => {
                            c.uin.drain(..used);
                            dechunk.done()
                        }
                        Err(_) => {
                            let to = *to;
                            return self.reset(i, to);
                        }
                    },
                    Framing::UntilClose => {
                        data.append(&mut c.uin);
                        false
                    }
                };
                if let (Some(reading), false) = (c.reading.as_mut(), data.is_empty()) {
                    reading.push(&data, monotonic_ms());
                }
                if let (Some(token), false) = (c.token, data.is_empty()) {
                    let n = data.len().min(c.tap_left);
                    if n > 0 || !c.tapped {
                        c.tap_left -= n;
                        c.tapped = true;
                        self.tap_bytes.extend_from_slice(&data[..n]);
                        self.taps.push(Tap { token, at_ms: monotonic_ms(), what: Seen::Data(n) });
                    }
                }
                if let Some(strip) = c.strip.as_mut() {
                    let mut kept = Vec::with_capacity(data.len());
                    strip.push(&data, &mut kept);
                    if done {
                        strip.finish(&mut kept);
                    }
                    data = kept;
                }
                if *to == Framing::Chunked {
                    chunk(&mut c.cout, &data);
                } else {
                    c.cout.extend_from_slice(&data);
                }
                if !done {
                    return Step::Wait;
                }
                if *to == Framing::Chunked {
                    c.cout.extend_from_slice(b"0\r\n\r\n");
                }
                let (keep, engine_keep) = (*keep, *engine_keep);
                self.ended(i, "complete");
                self.release_engine(i, engine_keep);
                let c = self.conns[i].as_mut().expect("open");
                c.phase = if keep { Phase::Head } else { Phase::Closing };
                Step::Progress
            }
            Phase::Admitting { .. } | Phase::Draining | Phase::Closing => Step::Wait,
        }
    }

    /**
     * A request the loop answers itself (413, 503 overloaded): the policy is told of it and of its
     * end at once, so it is counted like any other. Returns the request id its answer carries.
     */
    fn told_refused(&mut self, i: usize, req: &Head, outcome: &'static str) -> String {
        let request_id = request_id(&req.headers);
        if self.admit.is_some() {
            self.next_token += 1;
            let token = self.next_token;
            let at_ms = self.conns[i].as_ref().map_or(0.0, |c| c.head_at_ms);
            let (method, target, headers) = (req.start[0].clone(), req.start[1].clone(), req.headers.clone());
            self.pending.push(Admission {
                token,
                waits: false,
                request_id: request_id.clone(),
                usage_injected: false,
                answered: true,
                at_ms,
                method,
                target,
                headers,
                body: Vec::new(),
            });
            self.taps.push(Tap { token, at_ms: monotonic_ms(), what: Seen::End(outcome, None) });
            self.stats.ends_told.fetch_add(1, Ordering::Relaxed);
        }
        request_id
    }

    fn too_large(&mut self, i: usize, req: Head) -> Step {
        self.stats.body_too_large.fetch_add(1, Ordering::Relaxed);
        let request_id = self.told_refused(i, &req, "body_too_large");
        let message = format!("request body over {} bytes", self.max_body);
        let c = self.conns[i].as_mut().expect("open");
        refusal(&mut c.cout, 413, "Payload Too Large", &message, true, Some(&request_id));
        c.cin.clear();
        c.phase = Phase::Draining;
        self.next_exchange += 1;
        c.exchange = self.next_exchange;
        self.set_deadline(i, Instant::now() + DRAIN_FOR);
        Step::Wait
    }

    /** Sends the request to an engine connection (an idle one the engine has not closed, else a new one). */
    fn send(&mut self, i: usize, req: Head, body: Vec<u8>, upstream_fields: Vec<(String, String)>, client_fields: Vec<(String, String)>) -> Step {
        // Set first: a 502 for an engine that cannot be reached carries the request id too.
        self.conns[i].as_mut().expect("open").client_extra = client_fields;
        // A connect still in progress ends in on_event; the request's deadline below covers it too (504).
        let (up, connecting) = loop {
            let Some(u) = self.idle.pop() else {
                match connect_started(&self.target) {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        break (EngineSocket { stream, slot: self.new_engine_slot() }, true);
                    }
                    Err(_) => return self.engine_failed(i, "upstream_refused"),
                }
            };
            // Epoll reports an idle connection the engine closed, but only at the loop's next wait: one
            // closed since then would fail this request.
            if !readable_now(&u.stream) {
                break (u, false);
            }
            self.drop_engine_slot(u.slot);
        };
        self.up_owner[up.slot] = Some(i);
        let c = self.conns[i].as_mut().expect("open");
        c.uout = upstream_head(&req, &self.host, body.len(), &upstream_fields);
        c.strip_usage = false;
        c.strip = None;
        c.route = route_of(&req.start[1]);
        c.reading = None;
        c.uout.extend_from_slice(&body);
        c.uin.clear();
        c.up = Some(up);
        c.connecting = connecting;
        c.up_interest = if connecting { None } else { Some(IDLE_WANT) };
        c.phase = Phase::Waiting { method: req.start[0].clone(), keep: req.keep_alive(), http10: req.start[2] == "HTTP/1.0" };
        self.next_exchange += 1;
        c.exchange = self.next_exchange;
        self.set_deadline(i, Instant::now() + self.upstream_timeout);
        Step::Progress
    }

    /** Gives connection `i`'s current exchange its one deadline, in place of any it had. */
    fn set_deadline(&mut self, i: usize, at: Instant) {
        self.clear_deadline(i);
        let c = self.conns[i].as_mut().expect("open");
        let due = (at, i, c.exchange);
        c.deadline = Some(due);
        self.deadlines.insert(due);
    }

    fn clear_deadline(&mut self, i: usize) {
        if let Some(due) = self.conns.get_mut(i).and_then(Option::as_mut).and_then(|c| c.deadline.take()) {
            self.deadlines.remove(&due);
        }
    }

    /** The exchange is over: its engine connection goes back to the pool when it can carry another request. */
    fn release_engine(&mut self, i: usize, reusable: bool) {
        let c = self.conns[i].as_mut().expect("open");
        let Some(up) = c.up.take() else { return };
        c.connecting = false;
        let clean = reusable && c.uin.is_empty() && c.uout.is_empty();
        c.uin.clear();
        c.uout.clear();
        let interest = c.up_interest.take();
        if clean && self.idle.len() < MAX_IDLE {
            let op = if interest.is_none() { EPOLL_CTL_ADD } else { EPOLL_CTL_MOD };
            if interest == Some(IDLE_WANT) || self.ctl(op, up.stream.as_raw_fd(), IDLE_WANT, engine_token(up.slot)).is_ok() {
                self.up_owner[up.slot] = None;
                self.idle.push(up);
                return;
            }
        }
        self.drop_engine_slot(up.slot);
        // Closing it also takes it out of the epoll set.
        drop(up);
    }

    fn new_engine_slot(&mut self) -> usize {
        self.up_free.pop().unwrap_or_else(|| {
            self.up_owner.push(None);
            self.up_owner.len() - 1
        })
    }

    /** The engine socket in `slot` is closed (or about to be). */
    fn drop_engine_slot(&mut self, slot: usize) {
        self.up_owner[slot] = None;
        self.up_freed.push(slot);
    }

    /** An event on an engine socket: its connection's, or, for one in the pool, the engine closing it. */
    fn on_engine_event(&mut self, slot: usize, flags: u32) {
        match self.up_owner.get(slot) {
            Some(Some(i)) => self.on_event(*i, true, flags),
            Some(None) => {
                let Some(at) = self.idle.iter().position(|u| u.slot == slot) else { return };
                // An event reported before the socket joined the pool this turn is checked again.
                if readable_now(&self.idle[at].stream) {
                    drop(self.idle.swap_remove(at));
                    self.drop_engine_slot(slot);
                }
            }
            None => {}
        }
    }

    /**
     * The engine failed before its answer's head: 504 or 502, and the client connection carries on.
     * `outcome`, as the policy is told it: upstream_timeout, upstream_refused (no connection),
     * upstream_reset (closed before its head) or upstream_bad_answer (a head that is not HTTP/1.1).
     */
    fn engine_failed(&mut self, i: usize, outcome: &'static str) -> Step {
        self.clear_deadline(i);
        self.ended(i, outcome);
        self.release_engine(i, false);
        let c = self.conns[i].as_mut().expect("open");
        let request_id = c.client_extra.iter().find(|(k, _)| k == "x-request-id").map(|(_, v)| v.clone());
        if outcome == "upstream_timeout" {
            self.stats.upstream_timeout.fetch_add(1, Ordering::Relaxed);
            refusal(&mut c.cout, 504, "Gateway Timeout", "the engine did not answer in time", false, request_id.as_deref());
        } else {
            self.stats.upstream_refused.fetch_add(1, Ordering::Relaxed);
            refusal(&mut c.cout, 502, "Bad Gateway", "the engine is unavailable", false, request_id.as_deref());
        }
        c.phase = Phase::Head;
        Step::Progress
    }

    /** The engine broke off mid-body: a chunked client gets the end of its stream; any other framing cannot end cleanly. */
    fn reset(&mut self, i: usize, to: Framing) -> Step {
        self.stats.engine_reset.fetch_add(1, Ordering::Relaxed);
        self.ended(i, "engine_reset");
        self.release_engine(i, false);
        let c = self.conns[i].as_mut().expect("open");
        if to == Framing::Chunked {
            c.cout.extend_from_slice(b"0\r\n\r\n");
            c.phase = Phase::Head;
        } else {
            c.phase = Phase::Closing;
        }
        Step::Progress
    }

    /** The engine closed its side. */
    fn engine_ended(&mut self, i: usize) {
        let c = self.conns[i].as_mut().expect("open");
        match &c.phase {
            Phase::Streaming { from: Framing::UntilClose, to, keep, .. } => {
                let (to, keep) = (*to, *keep);
                let mut rest = std::mem::take(&mut c.uin);
                if let (Some(reading), false) = (c.reading.as_mut(), rest.is_empty()) {
                    reading.push(&rest, monotonic_ms());
                }
                if let Some(strip) = c.strip.as_mut() {
                    let mut kept = Vec::with_capacity(rest.len());
                    strip.push(&rest, &mut kept);
                    strip.finish(&mut kept);
                    rest = kept;
                }
                if to == Framing::Chunked {
                    chunk(&mut c.cout, &rest);
                    c.cout.extend_from_slice(b"0\r\n\r\n");
                } else {
                    c.cout.append(&mut rest);
                }
                self.ended(i, "complete");
                self.release_engine(i, false);
                let c = self.conns[i].as_mut().expect("open");
                c.phase = if keep && to == Framing::Chunked { Phase::Head } else { Phase::Closing };
                self.settle(i);
            }
            _ => self.engine_broke(i),
        }
    }

    fn engine_broke(&mut self, i: usize) {
        // What arrived before the end is relayed first.
        self.advance(i);
        let Some(c) = self.conns[i].as_mut() else { return };
        match &c.phase {
            Phase::Waiting { .. } => {
                self.engine_failed(i, "upstream_reset");
            }
            Phase::Streaming { to, .. } => {
                let to = *to;
                self.reset(i, to);
            }
            _ => {}
        }
        self.settle(i);
    }

    /** Requests between a complete body and the end of their answer. */
    fn in_progress(&self) -> usize {
        self.conns.iter().flatten().filter(|c| matches!(c.phase, Phase::Admitting { .. } | Phase::Waiting { .. } | Phase::Streaming { .. })).count()
    }

    /** Tells the policy how its exchange ended (once). */
    fn ended(&mut self, i: usize, outcome: &'static str) {
        let Some(c) = self.conns[i].as_mut() else { return };
        if let Some(token) = c.token.take() {
            let at_ms = monotonic_ms();
            let read = c.reading.take().map(|mut r| {
                if matches!(outcome, "complete" | "engine_reset") {
                    r.finish(at_ms);
                } else {
                    r.end(at_ms);
                }
                r.summary()
            });
            self.taps.push(Tap { token, at_ms, what: Seen::End(outcome, read) });
            self.stats.ends_told.fetch_add(1, Ordering::Relaxed);
        }
    }

    /** Applies the policy's decisions; one whose connection has gone meanwhile is dropped. */
    fn decided(&mut self) {
        let mut count = [0u8; 8];
        unsafe { read(self.inbox.wake, count.as_mut_ptr(), 8) };
        let all = std::mem::take(&mut *self.inbox.decisions.lock().unwrap_or_else(|e| e.into_inner()));
        for d in all {
            let token = match &d {
                Decision::Forward { token, .. } | Decision::Answer { token, .. } => *token,
            };
            let Some(i) = self.admitting.remove(&token) else { continue };
            let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else { continue };
            if c.token != Some(token) || !matches!(c.phase, Phase::Admitting { .. }) {
                continue;
            }
            let Phase::Admitting { req, body } = std::mem::replace(&mut c.phase, Phase::Head) else { unreachable!() };
            self.clear_deadline(i);
            match d {
                Decision::Forward { upstream_fields, client_fields, body: replaced, strip_usage, .. } => {
                    self.send(i, req, replaced.unwrap_or(body), upstream_fields, client_fields);
                    if let Some(c) = self.conns[i].as_mut() {
                        c.strip_usage = strip_usage;
                    }
                }
                Decision::Answer { response, .. } => {
                    let c = self.conns[i].as_mut().expect("open");
                    c.token = None;
                    c.cout.extend_from_slice(&response);
                    if !req.keep_alive() {
                        c.phase = Phase::Closing;
                    }
                }
            }
            self.settle(i);
        }
    }

    /** Acts on deadlines that have passed: an engine that has not answered, a refused body's drain. */
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&(at, i, exchange)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else { continue };
            if c.deadline == Some((at, i, exchange)) {
                c.deadline = None;
            }
            if c.exchange != exchange {
                continue;
            }
            match c.phase {
                Phase::Waiting { .. } => {
                    self.engine_failed(i, "upstream_timeout");
                    self.settle(i);
                }
                Phase::Draining => self.close(i),
                Phase::Admitting { .. } => {
                    self.stats.policy_timeout.fetch_add(1, Ordering::Relaxed);
                    let c = self.conns[i].as_mut().expect("open");
                    if let Some(token) = c.token {
                        self.admitting.remove(&token);
                    }
                    let Phase::Admitting { req, .. } = std::mem::replace(&mut c.phase, Phase::Head) else { unreachable!() };
                    refusal(&mut c.cout, 503, "Service Unavailable", "the proxy did not decide in time", !req.keep_alive(), None);
                    if !req.keep_alive() {
                        c.phase = Phase::Closing;
                    }
                    self.ended(i, "policy_timeout");
                    self.settle(i);
                }
                _ => {}
            }
        }
    }

    fn close(&mut self, i: usize) {
        let Some(mut c) = self.conns.get_mut(i).and_then(Option::take) else { return };
        if let Some(due) = c.deadline {
            self.deadlines.remove(&due);
        }
        if let Some(up) = &c.up {
            self.drop_engine_slot(up.slot);
        }
        if let Some(token) = c.token {
            self.admitting.remove(&token);
            let at_ms = monotonic_ms();
            let read = c.reading.take().map(|mut r| {
                r.end(at_ms);
                r.summary()
            });
            self.taps.push(Tap { token, at_ms, what: Seen::End("client_abort", read) });
            self.stats.ends_told.fetch_add(1, Ordering::Relaxed);
        }
        // Dropping the streams closes them, which also takes them out of the epoll set.
        drop(c);
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
        self.freed.push(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes()).expect("parses")
    }

    #[test]
    fn an_emptied_buffer_gives_back_room_past_the_keep_limit_and_no_other_keeps_less() {
        // (bytes left, room it had) -> at least this much room kept, at most this much.
        let rows: [(usize, usize, usize, usize); 4] =
            [(0, 64 * 1024, 0, 0), (0, 8 * 1024, 8 * 1024, usize::MAX), (1, 64 * 1024, 64 * 1024, usize::MAX), (0, 16 * 1024, 16 * 1024, usize::MAX)];
        for (left, room, min, max) in rows {
            let mut buf: Vec<u8> = Vec::with_capacity(room);
            buf.resize(left, b'x');
            give_back_room(&mut buf);
            assert!(buf.capacity() >= min && buf.capacity() <= max, "left {left}, room {room}: kept {}", buf.capacity());
            assert_eq!(buf.len(), left);
        }
    }

    #[test]
    fn request_framing_table() {
        let cases: [(&str, Result<Framing, &str>); 6] = [
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", Ok(Framing::Length(5))),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", Ok(Framing::Chunked)),
            ("GET / HTTP/1.1\r\n\r\n", Ok(Framing::None)),
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", Err("conflicting content-length")),
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", Err("bad content-length")),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", Err("unsupported transfer-encoding")),
        ];
        for (text, want) in cases {
            assert_eq!(head(text).request_framing(), want, "{text:?}");
        }
    }

    #[test]
    fn response_framing_table() {
        let cases: [(&str, &str, Framing); 6] = [
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "POST", Framing::Chunked),
            ("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", "GET", Framing::Length(7)),
            ("HTTP/1.1 200 OK\r\n\r\n", "GET", Framing::UntilClose),
            ("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", "HEAD", Framing::None),
            ("HTTP/1.1 204 No Content\r\n\r\n", "DELETE", Framing::None),
            ("HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", "GET", Framing::None),
        ];
        for (text, method, want) in cases {
            assert_eq!(head(text).response_framing(method), Ok(want), "{text:?} {method}");
        }
    }

    #[test]
    fn malformed_heads_are_refused() {
        for text in [
            "GET / HTTP/2.0\r\n\r\n",
            "GET /\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nno-colon\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n",
        ] {
            assert!(parse_head(text.as_bytes()).is_none(), "{text:?}");
        }
    }

    #[test]
    fn keep_alive_table() {
        let cases = [
            ("GET / HTTP/1.1\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            ("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\n\r\n", true),
        ];
        for (text, want) in cases {
            assert_eq!(head(text).keep_alive(), want, "{text:?}");
        }
    }

    #[test]
    fn upstream_head_drops_connection_fields_and_those_it_names() {
        let req = head(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: client.example\r\nConnection: keep-alive, X-Secret-Hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Authorization: Basic x\r\nAuthorization: Bearer k\r\nVia: 1.0 edge\r\nContent-Length: 3\r\n\r\n",
        );
        let text = String::from_utf8(upstream_head(&req, "127.0.0.1:8000", 3, &[])).unwrap();
        assert_eq!(
            text,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:8000\r\nAuthorization: Bearer k\r\ncontent-length: 3\r\nvia: 1.0 edge, 1.1 infertel\r\n\r\n"
        );
    }

    #[test]
    fn client_head_reframes_for_the_client() {
        let res = head("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n");
        let (h, framing, keep) = client_head(&res, Framing::Chunked, true, false, &[]);
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nvia: 1.1 infertel\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
        );
        assert_eq!((framing, keep), (Framing::Chunked, true));
        let (_, framing, keep) = client_head(&res, Framing::Chunked, true, true, &[]);
        assert_eq!((framing, keep), (Framing::UntilClose, false));
        let (_, framing, _) = client_head(&head("HTTP/1.1 200 OK\r\n\r\n"), Framing::UntilClose, true, false, &[]);
        assert_eq!(framing, Framing::Chunked);
    }

    /** Decodes `input` fed in pieces of `step` bytes, as reads would split it. */
    fn dechunk(input: &[u8], step: usize) -> Result<(Vec<u8>, bool, usize), &'static str> {
        let mut d = Dechunker::default();
        let mut data = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for piece in input.chunks(step) {
            pending.extend_from_slice(piece);
            let used = d.feed(&pending, &mut |x| data.extend_from_slice(x))?;
            pending.drain(..used);
        }
        Ok((data, d.done(), pending.len()))
    }

    #[test]
    fn dechunker_table_at_every_split() {
        type Case<'a> = (&'a [u8], Result<(&'a [u8], bool), &'a str>);
        let cases: [Case; 6] = [
            (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", Ok((b"hello world", true))),
            (b"5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n", Ok((b"hello", true))),
            (b"5\nhello\n0\n\n", Ok((b"hello", true))),
            (b"5\r\nhel", Ok((b"hel", false))),
            (b"zz\r\nhello\r\n", Err("bad chunk size")),
            (b"5\r\nhelloXX0\r\n\r\n", Err("chunk data not followed by CRLF")),
        ];
        for (input, want) in cases {
            for step in 1..=input.len() {
                let got = dechunk(input, step).map(|(d, done, _)| (d, done));
                let want = want.map(|(d, done)| (d.to_vec(), done));
                assert_eq!(got, want, "{:?} in pieces of {step}", String::from_utf8_lossy(input));
            }
        }
    }

    #[test]
    fn policy_fields_cannot_smuggle_a_field() {
        let cases: [(&str, Vec<(&str, &str)>); 4] = [
            ("x-request-id: abc\r\nx-tenant: acme\r\n", vec![("x-request-id", "abc"), ("x-tenant", "acme")]),
            ("x-a: 1\nx-b: 2", vec![("x-a", "1"), ("x-b", "2")]),
            ("bad name: 1\r\nx-ok: 2\r\n", vec![("x-ok", "2")]),
            ("x-a: 1\rinjected: 2\r\n", vec![]),
        ];
        for (text, want) in cases {
            let got = fields_of(text);
            let want: Vec<(String, String)> = want.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn policy_fields_replace_the_clients() {
        let req = head("POST /v1/completions HTTP/1.1\r\nX-Request-Id: evil\r\nContent-Length: 0\r\n\r\n");
        let text = String::from_utf8(upstream_head(&req, "e:1", 0, &[("x-request-id".into(), "r1".into())])).unwrap();
        assert_eq!(text, "POST /v1/completions HTTP/1.1\r\nhost: e:1\r\ncontent-length: 0\r\nx-request-id: r1\r\nvia: 1.1 infertel\r\n\r\n");
    }

    /** Every string of up to 8 bytes of `a`, CR and LF: the one pass finds what two separate searches find. */
    #[test]
    fn event_end_is_the_first_blank_line_of_either_kind() {
        let by_two_searches = |buf: &[u8]| {
            let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
            let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
            match (lf, crlf) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        let mut checked = 0;
        for len in 0..=8u32 {
            for n in 0..3usize.pow(len) {
                let buf: Vec<u8> = (0..len).map(|k| [b'a', b'\r', b'\n'][n / 3usize.pow(k) % 3]).collect();
                assert_eq!(event_end(&buf), by_two_searches(&buf), "{buf:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, (0..=8).map(|k| 3usize.pow(k)).sum::<usize>());
    }

    #[test]
    fn usage_chunk_table() {
        let cases: [(&str, bool); 10] = [
            ("data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5}}\n\n", true),
            ("data: { \"choices\" : [ ] , \"usage\" : { } }\r\n\r\n", true),
            ("data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":3}}\n\n", false),
            ("data: {\"choices\":[],\"usage\":null}\n\n", false),
            ("data: {\"usage\":{\"a\":1}}\n\n", false),
            ("data: [DONE]\n\n", false),
            ("data: {\"x\":{\"choices\":[],\"usage\":{}}}\n\n", false),
            ("data: {\"note\":\"\\\"choices\\\":[]\",\"choices\":[],\"usage\":{}}\n\n", true),
            ("data: {\"choices\":[],\"usage\":{}\n\n", false),
            ("event: x\ndata: {\"choices\":[],\ndata: \"usage\":{}}\n\n", true),
        ];
        for (event, want) in cases {
            assert_eq!(is_usage_chunk(event.as_bytes()), want, "{event:?}");
        }
    }

    #[test]
    fn usage_strip_at_every_split() {
        let content = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
        let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n";
        let input = format!("{content}{usage}data: [DONE]\n\n");
        for step in 1..=input.len() {
            let mut s = UsageStrip::default();
            let mut out = Vec::new();
            for piece in input.as_bytes().chunks(step) {
                s.push(piece, &mut out);
            }
            s.finish(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{content}data: [DONE]\n\n"), "pieces of {step}");
        }
    }

    #[test]
    fn usage_plan_table() {
        let plan = |method: &str, target: &str, body: &[u8]| usage_plan(method, target, body, request_members(method, target, body).as_deref());
        let chat = "/v1/chat/completions";
        let cases: [(&str, &str, &str, Option<&str>); 13] = [
            ("POST", chat, "{\"model\":\"m\",\"stream\":true}", Some("{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}")),
            ("POST", "/v1/completions?x=1", "{\"stream\": true }\n", Some("{\"stream\": true ,\"stream_options\":{\"include_usage\":true}}\n")),
            ("POST", chat, "{\"stream\":false}", None),
            ("POST", chat, "{\"stream\":\"true\"}", None),
            ("POST", chat, "{\"stream\":true,\"stream_options\":{\"include_usage\":true}}", None),
            ("POST", "/v1/embeddings", "{\"stream\":true}", None),
            ("GET", chat, "{\"stream\":true}", None),
            ("POST", chat, "{\"stream\":true,", None),
            ("POST", chat, "{\"stream\":true,\"x\":tru}", None),
            // Bodies JSON.parse throws on, so the Node proxy forwards them untouched: a leading zero, a raw control character, a bad escape, a trailing comma.
            ("POST", chat, "{\"stream\":true,\"n\":01}", None),
            ("POST", chat, "{\"stream\":true,\"x\":\"a\u{1}b\"}", None),
            ("POST", chat, "{\"stream\":true,\"x\":\"\\q\"}", None),
            ("POST", chat, "{\"stream\":true,\"x\":[1,]}", None),
        ];
        for (method, target, body, want) in cases {
            let want = match want {
                Some(b) => UsagePlan::Inject(b.as_bytes().to_vec()),
                None => UsagePlan::Leave,
            };
            assert_eq!(plan(method, target, body.as_bytes()), want, "{method} {target} {body}");
        }
        assert_eq!(plan("POST", chat, b"{\"stream\":true,\"stream_options\":{\"include_usage\":false}}"), UsagePlan::AskJs);
        assert_eq!(plan("POST", chat, b"{\"stream\":true,\"stream_options\":{}}"), UsagePlan::AskJs);
    }

    #[test]
    fn traceparent_table() {
        for (v, ok) in [
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true),
            ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", true),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false),
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", false),
            ("garbage", false),
        ] {
            assert_eq!(valid_traceparent(v), ok, "{v}");
        }
        let req = head("GET / HTTP/1.1\r\ntraceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01\r\ntracestate: v=1\r\n\r\n");
        let text = String::from_utf8(upstream_head(&req, "e:1", 0, &[])).unwrap();
        assert!(!text.contains("traceparent") && !text.contains("tracestate"), "{text}");
        let req = head("GET / HTTP/1.1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\ntracestate: v=1\r\n\r\n");
        let text = String::from_utf8(upstream_head(&req, "e:1", 0, &[])).unwrap();
        assert!(text.contains("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\ntracestate: v=1"), "{text}");
    }

    #[test]
    fn request_id_keeps_a_plain_token_and_makes_up_the_rest() {
        let h = |v: &str| vec![("X-Request-Id".to_string(), v.to_string())];
        assert_eq!(request_id(&h("abc-1.2:3_x")), "abc-1.2:3_x");
        for crafted in ["", "a b", "x\u{7f}", &"a".repeat(129)] {
            let id = request_id(&h(crafted));
            assert_eq!(id.len(), 36, "{crafted:?} gave {id}");
            assert_eq!(&id[14..15], "4");
            assert_ne!(id, request_id(&h(crafted)), "two made-up ids are the same");
        }
        // Across many batches of random bytes, no id is made twice.
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| request_id(&[])).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn uuid_text_form_and_the_fallback_when_getrandom_fails() {
        // RFC 9562's layout, checked by hand: 8-4-4-4-12 hex digits, version nibble 4, variant 10xx.
        let bytes: [u8; 16] = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88];
        assert_eq!(uuid_v4(bytes), "01234567-89ab-4def-bfee-ddccbbaa9988");
        assert_eq!(uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| uuid_v4(fallback_id_bytes())).collect();
        assert_eq!(ids.len(), 1000, "the fallback repeated an id");
        let mut buf = [0u8; 64];
        assert!(fill_random(&mut buf) && buf.iter().any(|&b| b != 0));
    }

    #[test]
    fn policy_body_keeps_only_what_js_reads() {
        let told =
            |method: &str, target: &str, body: &[u8], keep: bool| policy_body(method, target, body, request_members(method, target, body).as_deref(), keep);
        let chat = "/v1/chat/completions";
        let long = format!("{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}],\"stream\":true,\"max_tokens\":7}}", "x".repeat(65536));
        // (method, target, body, keep the prompt) -> what JS is handed, written out by hand.
        let rows: [(&str, &str, &str, bool, &str); 12] = [
            ("POST", chat, &long, false, "{\"model\":\"m\",\"stream\":true,\"max_tokens\":7}"),
            ("POST", chat, "{\"model\":\"m\",\"messages\":[1],\"user\":\"u\"}", true, "{\"model\":\"m\",\"messages\":[1]}"),
            // Duplicates stay in order, so JSON.parse still takes the last; values keep their spelling.
            (
                "POST",
                "/v1/completions?x=1",
                "{ \"temperature\" : 1.50 , \"model\":\"a\", \"model\":\"b\" }",
                false,
                "{\"temperature\":1.50,\"model\":\"a\",\"model\":\"b\"}",
            ),
            (
                "POST",
                "/v1/responses",
                "{\"input\":\"p\",\"max_output_tokens\":3,\"stream_options\":{}}",
                false,
                "{\"max_output_tokens\":3,\"stream_options\":{}}",
            ),
            ("POST", "/v1/embeddings", "{\"input\":[\"a\",\"b\"],\"model\":\"e\"}", true, "{\"input\":[\"a\",\"b\"],\"model\":\"e\"}"),
            (
                "POST",
                "/generate",
                "{\"inputs\":\"p\",\"parameters\":{\"max_new_tokens\":5,\"temperature\":0.2}}",
                false,
                "{\"parameters\":{\"max_new_tokens\":5,\"temperature\":0.2}}",
            ),
            ("POST", "/generate_stream", "{\"inputs\":\"p\"}", true, "{\"inputs\":\"p\"}"),
            // An escaped key may be one JS reads: kept.
            ("POST", chat, "{\"mod\\u0065l\":\"m\",\"other\":1}", false, "{\"mod\\u0065l\":\"m\"}"),
            ("POST", chat, "{}", false, "{}"),
            // Not one object: handed whole, for JS to count as malformed.
            ("POST", chat, "[{\"model\":\"m\"}]", false, "[{\"model\":\"m\"}]"),
            ("POST", chat, "{\"model\":\"m\",", false, "{\"model\":\"m\","),
            // JS reads no body of another route or method.
            ("POST", "/v1/models", "{\"model\":\"m\"}", false, ""),
        ];
        for (method, target, body, keep, want) in rows {
            let got = told(method, target, body.as_bytes(), keep);
            assert_eq!(String::from_utf8_lossy(&got), want, "{method} {target} {}", &body[..body.len().min(60)]);
        }
        assert!(told("GET", chat, b"{\"model\":\"m\"}", true).is_empty());
    }

    #[test]
    fn chunk_encodes_and_skips_empty() {
        let mut out = Vec::new();
        chunk(&mut out, b"");
        chunk(&mut out, &[b'a'; 26]);
        assert_eq!(out, [b"1a\r\n".as_slice(), &[b'a'; 26], b"\r\n"].concat());
    }
}
