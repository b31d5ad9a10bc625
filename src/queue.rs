//! A bounded queue between pipeline threads with an explicit full policy.
//!
//! `std::sync::mpsc::sync_channel` can block or refuse the new item, but not
//! drop the oldest one, which is what a live sensor usually wants: fresh
//! data beats stale data.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::Deserialize;

/// Policy of a full bounded queue.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// The producer waits (a paced sensor then falls behind, nothing is dropped).
    #[default]
    Block,
    /// The oldest queued item is dropped and counted.
    DropOldest,
    /// The new item is dropped and counted.
    DropNewest,
}

/// `[pipeline]`: the sample queue between the source thread and the
/// pipeline thread.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Capacity of the sample queue (source → inference thread), in batches of samples.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// What happens when the queue is full.
    #[serde(default)]
    pub on_full: OnFull,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: default_capacity(),
            on_full: OnFull::default(),
        }
    }
}

fn default_capacity() -> usize {
    64
}

impl QueueConfig {
    /// Checks `[pipeline]`.
    pub fn validate(&self, p: &mut crate::problem::Problems) {
        p.at_least_one(self.capacity as u64, "pipeline.capacity");
    }
}

/// How often blocked callers look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
    /// Callers blocked in `push` (full queue) and in `pop` (empty queue):
    /// a notify is a system call even with nobody waiting, so it is made
    /// only when somebody is.
    push_waiters: usize,
    pop_waiters: usize,
}

/// A bounded multi-producer, multi-consumer queue.
#[derive(Debug)]
pub struct BoundedQueue<T> {
    inner: Mutex<Inner<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
    on_full: OnFull,
    dropped: AtomicU64,
}

impl<T> BoundedQueue<T> {
    /// A queue of at most `capacity` items (at least 1).
    pub fn new(capacity: usize, on_full: OnFull) -> Self {
        BoundedQueue {
            inner: Mutex::new(Inner {
                items: VecDeque::with_capacity(capacity.max(1)),
                closed: false,
                push_waiters: 0,
                pop_waiters: 0,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity: capacity.max(1),
            on_full,
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // A poisoned lock means a pipeline thread panicked; the queue's
        // contents are still consistent, so keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `item` under the full policy. Returns false when the queue is
    /// closed or `stop` was raised while waiting (the item is then dropped).
    pub fn push(&self, item: T, stop: &AtomicBool) -> bool {
        let mut g = self.lock();
        loop {
            if g.closed {
                return false;
            }
            if g.items.len() < self.capacity {
                break;
            }
            match self.on_full {
                OnFull::DropNewest => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                OnFull::DropOldest => {
                    g.items.pop_front();
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                OnFull::Block => {
                    if stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    g.push_waiters += 1;
                    g = self
                        .not_full
                        .wait_timeout(g, POLL)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    g.push_waiters -= 1;
                }
            }
        }
        g.items.push_back(item);
        let wake = g.pop_waiters > 0;
        drop(g);
        if wake {
            self.not_empty.notify_one();
        }
        true
    }

    /// The oldest item; waits while the queue is empty. `None` once the
    /// queue is closed and empty, or `stop` is raised and it is empty:
    /// what was queued before a stop is still handed out (drained).
    pub fn pop(&self, stop: &AtomicBool) -> Option<T> {
        loop {
            match self.pop_timeout(stop, POLL) {
                Ok(item) => return Some(item),
                Err(true) => return None,
                Err(false) => {}
            }
        }
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// Like [`pop`](Self::pop), but gives up after `timeout`:
    /// `Err(true)` when the queue is done, `Err(false)` on timeout.
    pub fn pop_timeout(&self, stop: &AtomicBool, timeout: Duration) -> Result<T, bool> {
        let deadline = std::time::Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            if let Some(item) = g.items.pop_front() {
                // A blocked producer is woken once the queue is half empty,
                // not on every pop: it then refills in one go, and a fast
                // source costs one wake-up per capacity/2 items instead of
                // one per item.
                let wake = g.push_waiters > 0 && g.items.len() <= self.capacity / 2;
                drop(g);
                if wake {
                    self.not_full.notify_all();
                }
                return Ok(item);
            }
            if g.closed || stop.load(Ordering::Relaxed) {
                return Err(true);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(false);
            }
            g.pop_waiters += 1;
            g = self
                .not_empty
                .wait_timeout(g, (deadline - now).min(POLL))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            g.pop_waiters -= 1;
        }
    }

    /// No more pushes; consumers drain what is left.
    pub fn close(&self) {
        self.lock().closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }

    /// Items dropped by the full policy so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn full_policies() {
        let stop = AtomicBool::new(false);
        for (policy, expect) in [
            (OnFull::DropOldest, vec![2, 3]),
            (OnFull::DropNewest, vec![1, 2]),
        ] {
            let q = BoundedQueue::new(2, policy);
            for i in 1..=3 {
                assert!(q.push(i, &stop));
            }
            q.close();
            let got: Vec<i32> = std::iter::from_fn(|| q.pop(&stop)).collect();
            assert_eq!(got, expect);
            assert_eq!(q.dropped(), 1);
        }
    }

    #[test]
    fn block_waits_for_the_consumer_and_loses_nothing() {
        let stop = Arc::new(AtomicBool::new(false));
        let q = Arc::new(BoundedQueue::new(1, OnFull::Block));
        let (q2, s2) = (q.clone(), stop.clone());
        let producer = std::thread::spawn(move || {
            for i in 0..100 {
                assert!(q2.push(i, &s2));
            }
            q2.close();
        });
        let got: Vec<i32> = std::iter::from_fn(|| q.pop(&stop)).collect();
        producer.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(q.dropped(), 0);
    }

    #[test]
    fn stop_ends_an_empty_wait_but_drains_first() {
        let stop = AtomicBool::new(false);
        let q = BoundedQueue::new(4, OnFull::Block);
        q.push(7, &stop);
        stop.store(true, Ordering::Relaxed);
        assert_eq!(q.pop(&stop), Some(7));
        assert_eq!(q.pop(&stop), None);
    }
}
