//! What the loop hands to JS comes back to the loop to be freed.
//!
//! glibc's malloc gives each thread an arena, and free() puts a block back into the arena it came
//! from, under that arena's lock (past a few blocks per size that the freeing thread keeps for
//! itself). When JS dropped the batches the loop had built, it took the loop's arena lock dozens of
//! times a batch, and the loop, allocating for its next request, waited on it: 30 waits of up to
//! 0.19 ms in one 3 s window of 200 staggered streams (`perf trace -e futex` on the loop thread),
//! and the agent runs JS under SCHED_IDLE, which any other thread preempts, lock held or not.
//! Here JS only links a spent batch into a list, with a compare-and-swap and no lock, and the loop
//! frees the list on its next turn.

use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

/** One value on its way to JS and back: allocated by the loop, freed by the loop. */
pub struct Node<T> {
    next: *mut Node<T>,
    pub value: T,
    home: Option<Arc<Returns<T>>>,
}

/** The list of values given back, newest first; only the loop takes from it, all at once. */
pub struct Returns<T> {
    head: AtomicPtr<Node<T>>,
}

// SAFETY: the list moves each value from the thread that gives it back to the thread that frees
// it, and nothing else reads it: T has to be Send, as for a channel.
unsafe impl<T: Send> Send for Returns<T> {}
unsafe impl<T: Send> Sync for Returns<T> {}

impl<T: Send> Returns<T> {
    pub fn new() -> Arc<Returns<T>> {
        Arc::new(Returns { head: AtomicPtr::new(ptr::null_mut()) })
    }

    /** `value` in a node of its own, allocated here, to pass as a raw pointer; give_back brings it home. */
    pub fn wrap(self: &Arc<Self>, value: T) -> *mut Node<T> {
        Box::into_raw(Box::new(Node { next: ptr::null_mut(), value, home: Some(self.clone()) }))
    }

    /** Frees every value given back so far, on the calling thread; returns how many. */
    pub fn free_returned(&self) -> usize {
        // Called every turn of the loop: an empty list costs a load, not a read-modify-write.
        if self.head.load(Ordering::Relaxed).is_null() {
            return 0;
        }
        let mut p = self.head.swap(ptr::null_mut(), Ordering::Acquire);
        let mut freed = 0;
        while !p.is_null() {
            // SAFETY: each node in the list came from wrap (Box::into_raw) and was linked in once.
            let node = unsafe { Box::from_raw(p) };
            p = node.next;
            freed += 1;
        }
        freed
    }
}

/**
 * Links a node from `wrap` into its list, for the loop to free.
 *
 * # Safety
 * `node` came from `Returns::wrap`, and is given back once, after which the caller does not touch it.
 */
pub unsafe fn give_back<T: Send>(node: *mut Node<T>) {
    let Some(home) = (*node).home.take() else { return };
    let mut head = home.head.load(Ordering::Relaxed);
    loop {
        (*node).next = head;
        match home.head.compare_exchange_weak(head, node, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => head = now,
        }
    }
    // When the loop has already gone this was the last reference, and the list is freed here.
    drop(home);
}

impl<T> Drop for Returns<T> {
    fn drop(&mut self) {
        let mut p = *self.head.get_mut();
        while !p.is_null() {
            // SAFETY: as in free_returned; nothing else can reach the list once it is dropped.
            let node = unsafe { Box::from_raw(p) };
            p = node.next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /** Counts its drops, and on which thread the last one happened. */
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn values_given_back_on_other_threads_are_freed_once_each_by_the_taker() {
        // (threads giving back, values each)
        for (threads, each) in [(1usize, 1usize), (1, 1000), (4, 2500), (8, 300)] {
            let drops = Arc::new(AtomicUsize::new(0));
            let returns = Returns::new();
            let nodes: Vec<Vec<usize>> = (0..threads).map(|_| (0..each).map(|_| returns.wrap(Counted(drops.clone())) as usize).collect()).collect();
            let givers: Vec<_> = nodes
                .into_iter()
                .map(|mine| {
                    std::thread::spawn(move || {
                        for p in mine {
                            unsafe { give_back(p as *mut Node<Counted>) };
                        }
                    })
                })
                .collect();
            let mut freed = 0;
            while givers.iter().any(|g| !g.is_finished()) {
                freed += returns.free_returned();
            }
            for g in givers {
                g.join().expect("giver");
            }
            freed += returns.free_returned();
            assert_eq!(freed, threads * each, "{threads} threads of {each}");
            assert_eq!(drops.load(Ordering::SeqCst), threads * each, "{threads} threads of {each}");
            assert_eq!(returns.free_returned(), 0);
        }
    }

    #[test]
    fn a_value_given_back_after_the_taker_has_gone_is_freed_by_the_giver() {
        let drops = Arc::new(AtomicUsize::new(0));
        let returns = Returns::new();
        let late = returns.wrap(Counted(drops.clone()));
        let early = returns.wrap(Counted(drops.clone()));
        unsafe { give_back(early) };
        drop(returns);
        assert_eq!(drops.load(Ordering::SeqCst), 0, "the list lives while a node is out");
        unsafe { give_back(late) };
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_node_never_given_back_is_freed_with_its_box() {
        let drops = Arc::new(AtomicUsize::new(0));
        let returns = Returns::new();
        let node = returns.wrap(Counted(drops.clone()));
        drop(unsafe { Box::from_raw(node) });
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(Arc::strong_count(&returns), 1);
    }
}
