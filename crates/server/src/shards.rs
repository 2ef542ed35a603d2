//! Which shard of a sharded counter the calling thread writes: each thread
//! gets the next number the first time it asks, so the threads serving
//! requests each write a shard of their own.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The calling thread's number, counted from 0 in the order threads first ask.
pub fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    NUMBER.with(|number| *number)
}
