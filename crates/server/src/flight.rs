//! Single flight: concurrent requests for one key share one piece of work.
//!
//! The work runs in its own task, so it completes (and its result is kept)
//! even when the client that started it disconnects.

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{Arc, Mutex},
};

use futures::future::{BoxFuture, FutureExt, Shared};

use crate::error::ApiError;

type Flight<T> = Shared<BoxFuture<'static, Result<T, ApiError>>>;

/// The flights under way, by key.
pub struct Flights<K, T: Clone> {
    under_way: Mutex<HashMap<K, Flight<T>>>,
}

impl<K, T> Flights<K, T>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// No flights.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            under_way: Mutex::new(HashMap::new()),
        })
    }

    /// Joins the flight for `key`, or starts one with `work`.
    pub async fn run<F>(self: &Arc<Self>, key: K, work: impl FnOnce() -> F) -> Result<T, ApiError>
    where
        F: Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        let flight = {
            let mut under_way = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(flight) = under_way.get(&key) {
                flight.clone()
            } else {
                let this = Arc::clone(self);
                let done_key = key.clone();
                let work = work();
                let task = tokio::spawn(async move {
                    let result = work.await;
                    this.under_way
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&done_key);
                    result
                });
                let flight = async move {
                    task.await
                        .unwrap_or_else(|e| Err(ApiError::internal(format!("internal error: {e}"))))
                }
                .boxed()
                .shared();
                under_way.insert(key, flight.clone());
                flight
            }
        };
        flight.await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights = Flights::<String, u32>::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let calls = (0..20).map(|_| {
            let runs = runs.clone();
            let flights = flights.clone();
            async move {
                flights
                    .run("k".to_owned(), || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Ok(7)
                    })
                    .await
            }
        });
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(|r| matches!(r, Ok(7))));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
