//! Which of the process's threads the kernel serves first when the CPUs are busy.
//!
//! The data path's loop (edge.rs) carries every byte a client waits for. With no rate limits and no
//! tracing, the rest of the process (Node's main thread, V8's and libuv's workers) only records what
//! the loop saw, after the fact. `idle_all_but_kept` puts those threads under SCHED_IDLE, so a woken
//! loop, engine or client preempts the bookkeeping instead of waiting behind it. It also changes
//! where a woken task is placed: the kernel counts a CPU that runs only SCHED_IDLE threads as free,
//! so a client woken by the loop's write can go to the CPU running the bookkeeping instead of the
//! loop's.
//!
//! A new thread takes its creator's policy, and an unprivileged thread cannot leave SCHED_IDLE (a
//! pod's RLIMIT_NICE is 0). So the loops are not spawned by Node's main thread: a launcher thread,
//! started before anything is idled, spawns them, and the loops and the launcher are never idled.

use std::io;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;

#[repr(C)]
struct SchedParam {
    priority: i32,
}

extern "C" {
    fn sched_setscheduler(pid: i32, policy: i32, param: *const SchedParam) -> i32;
    fn sched_getscheduler(pid: i32) -> i32;
    fn gettid() -> i32;
}

pub const SCHED_IDLE: i32 = 5;
const ESRCH: i32 = 3;

/** Threads whose policy is left as it is: the launcher, and each loop it started while that loop runs. */
static KEPT: Mutex<Vec<i32>> = Mutex::new(Vec::new());

pub struct Launch {
    name: String,
    job: Box<dyn FnOnce() + Send>,
    reply: mpsc::Sender<io::Result<JoinHandle<()>>>,
}

static LAUNCHER: OnceLock<Mutex<mpsc::Sender<Launch>>> = OnceLock::new();

fn kept() -> MutexGuard<'static, Vec<i32>> {
    KEPT.lock().unwrap_or_else(|e| e.into_inner())
}

/** The calling thread's policy (SCHED_OTHER 0, SCHED_IDLE 5, ...), or -1. */
pub fn own_policy() -> i32 {
    unsafe { sched_getscheduler(0) }
}

/**
 * The launcher, started on first use. The addon starts it when Node loads it, before anything can
 * have been idled: a launcher started by an idled thread would pass SCHED_IDLE on to every loop.
 */
pub fn launcher() -> io::Result<&'static Mutex<mpsc::Sender<Launch>>> {
    if let Some(l) = LAUNCHER.get() {
        return Ok(l);
    }
    let (tx, rx) = mpsc::channel::<Launch>();
    let (listed, is_listed) = mpsc::channel();
    std::thread::Builder::new().name("infertel-launch".into()).spawn(move || {
        let own = unsafe { gettid() };
        kept().push(own);
        let _ = listed.send(());
        for l in rx {
            let (ready, started) = mpsc::channel();
            let job = l.job;
            let spawned = std::thread::Builder::new().name(l.name).spawn(move || {
                let tid = unsafe { gettid() };
                kept().push(tid);
                let _ = ready.send(());
                job();
                kept().retain(|t| *t != tid);
            });
            // Answered once the thread is listed, so nothing idled after the answer can reach it.
            if spawned.is_ok() {
                let _ = started.recv();
            }
            let _ = l.reply.send(spawned);
        }
        // A launcher that lost the race to be the one kept has no sender left: it ends here.
        kept().retain(|t| *t != own);
    })?;
    // Returned once the launcher is listed, so an idling that follows cannot reach it.
    let _ = is_listed.recv();
    Ok(LAUNCHER.get_or_init(|| Mutex::new(tx)))
}

/** Spawns a thread that keeps the policy the process started with, whatever the caller's. */
pub fn spawn_kept(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    let stopped = || io::Error::other("the thread launcher has stopped");
    let (reply, answer) = mpsc::channel();
    launcher()?.lock().unwrap_or_else(|e| e.into_inner()).send(Launch { name: name.into(), job: Box::new(f), reply }).map_err(|_| stopped())?;
    answer.recv().map_err(|_| stopped())?
}

/** What `idle_all_but_kept` did. */
#[derive(Debug, Default)]
pub struct Idled {
    pub idled: usize,
    pub kept: usize,
    pub failed: usize,
    /** The first refusal, as the kernel worded it. */
    pub error: Option<String>,
}

/**
 * Puts every thread of this process under SCHED_IDLE except the launcher and the loops it started.
 * Threads started later by an idled thread inherit it, as libuv's pool threads do.
 */
pub fn idle_all_but_kept() -> io::Result<Idled> {
    // Started first, so the launcher itself is never one of the idled threads' children.
    launcher()?;
    let kept = kept().clone();
    let mut out = Idled::default();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Some(tid) = entry?.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if kept.contains(&tid) {
            out.kept += 1;
            continue;
        }
        if unsafe { sched_setscheduler(tid, SCHED_IDLE, &SchedParam { priority: 0 }) } == 0 {
            out.idled += 1;
            continue;
        }
        let err = io::Error::last_os_error();
        // A thread that ended since the listing is no failure.
        if err.raw_os_error() != Some(ESRCH) {
            out.failed += 1;
            out.error.get_or_insert_with(|| err.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_thread_keeps_its_policy_when_spawned_by_an_idled_one() {
        launcher().unwrap();
        // Run in a thread of its own, idled alone: the test harness's threads are left as they are.
        let from_idle = std::thread::spawn(|| {
            assert_eq!(unsafe { sched_setscheduler(0, SCHED_IDLE, &SchedParam { priority: 0 }) }, 0);
            assert_eq!(own_policy(), SCHED_IDLE);
            let (tx, rx) = mpsc::channel();
            spawn_kept("kept-test", move || tx.send(own_policy()).unwrap()).unwrap().join().unwrap();
            let inherited = std::thread::spawn(own_policy).join().unwrap();
            (rx.recv().unwrap(), inherited)
        });
        let (kept_policy, inherited) = from_idle.join().unwrap();
        assert_eq!(kept_policy, 0, "spawned through the launcher: SCHED_OTHER");
        assert_eq!(inherited, SCHED_IDLE, "spawned directly: the creator's policy");
    }
}
