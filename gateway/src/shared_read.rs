//! Reads of the store shared by the requests that want the same thing at the same time.
//!
//! Each request is answered by a read that started after it asked, so it sees every change
//! committed before it came, as if it had read the store itself; but however many requests ask
//! at once, one read is in flight, and each read answers every request waiting then. (A store
//! read that takes a network round trip would otherwise be made once per request: a burst of
//! requests queues for the store's connections until they time out.) The key cache reads the
//! store's change count this way, the catalog the open objections.

use std::sync::Arc;

use crate::store::StoreError;

/// One kind of read, shared: see the module's description.
pub struct SharedRead<T>(Arc<Reads<T>>);

impl<T> Clone for SharedRead<T> {
    fn clone(&self) -> SharedRead<T> {
        SharedRead(self.0.clone())
    }
}

struct Reads<T> {
    /// Reads started so far, and whether one is in flight.
    started: std::sync::Mutex<(u64, bool)>,
    /// The last read to finish: its number (in the order reads started) and what it read.
    finished: tokio::sync::watch::Sender<(u64, Result<T, String>)>,
}

impl<T> Default for SharedRead<T> {
    fn default() -> SharedRead<T> {
        SharedRead(Arc::new(Reads {
            started: std::sync::Mutex::new((0, false)),
            finished: tokio::sync::watch::Sender::new((0, Err(String::new()))),
        }))
    }
}

impl<T: Clone + Send + Sync + 'static> SharedRead<T> {
    /// What `read` (run on a blocking thread) gives, read after this call began.
    pub async fn read(&self, read: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> Result<T, StoreError> {
        let mut finished = self.0.finished.subscribe();
        // A read in flight now may have started before this call: only a later one will do.
        let wanted = self.0.started.lock().expect("never poisoned").0 + 1;
        let mut read = Some(read);
        loop {
            {
                let last = finished.borrow_and_update();
                if last.0 >= wanted {
                    return last.1.clone().map_err(StoreError::Backend);
                }
            }
            let lead = {
                let mut started = self.0.started.lock().expect("never poisoned");
                let lead = !started.1 && read.is_some();
                if lead {
                    *started = (started.0 + 1, true);
                }
                lead.then_some(started.0)
            };
            if let Some(number) = lead {
                let f = read.take().expect("only a request still holding its read leads");
                // The read runs to its end on a task of its own, even if this request is
                // dropped meanwhile: the others wait for its answer.
                let reads = self.0.clone();
                tokio::spawn(async move {
                    let result = tokio::task::spawn_blocking(f)
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()));
                    reads.started.lock().expect("never poisoned").1 = false;
                    let _previous = reads.finished.send_replace((number, result));
                });
            }
            if finished.changed().await.is_err() {
                return Err(StoreError::Backend("the shared reader is gone".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A count that goes up by one on every read, each read taking `millis`.
    fn counting(reads: &Arc<AtomicUsize>, millis: u64) -> impl FnOnce() -> Result<i64, StoreError> + Send + 'static {
        let reads = reads.clone();
        move || {
            std::thread::sleep(Duration::from_millis(millis));
            Ok(reads.fetch_add(1, Ordering::SeqCst) as i64 + 1)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_asking_at_once_share_one_read() {
        let count = SharedRead::default();
        let reads = Arc::new(AtomicUsize::new(0));
        let asks: Vec<_> = (0..500)
            .map(|_| {
                let (count, read) = (count.clone(), counting(&reads, 20));
                tokio::spawn(async move { count.read(read).await.unwrap() })
            })
            .collect();
        for ask in asks {
            assert!(ask.await.unwrap() >= 1);
        }
        let reads = reads.load(Ordering::SeqCst);
        assert!(reads <= 5, "500 requests at once made {reads} reads");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_came_during_a_read_waits_for_a_read_that_started_after_it() {
        let count = SharedRead::default();
        let reads = Arc::new(AtomicUsize::new(0));
        let first = {
            let (count, read) = (count.clone(), counting(&reads, 200));
            tokio::spawn(async move { count.read(read).await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A change committed now is not seen by the read in flight: this request must not be
        // answered by it.
        let second = count.read(counting(&reads, 1)).await.unwrap();
        assert_eq!(first.await.unwrap(), 1);
        assert_eq!(second, 2, "not answered by the read that was in flight when it came");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_read_fails_its_waiters_and_the_next_request_reads_again() {
        let count = SharedRead::default();
        let failed = count.read(|| Err(StoreError::Backend("no PostgreSQL connection".into()))).await;
        assert!(failed.unwrap_err().to_string().contains("no PostgreSQL connection"));
        assert_eq!(count.read(|| Ok(7)).await.unwrap(), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_dropped_while_it_leads_a_read_leaves_the_others_their_answer() {
        let count = SharedRead::default();
        let reads = Arc::new(AtomicUsize::new(0));
        let leader = {
            let (count, read) = (count.clone(), counting(&reads, 100));
            tokio::spawn(async move { count.read(read).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.abort();
        let later = tokio::time::timeout(Duration::from_secs(5), count.read(counting(&reads, 1))).await;
        assert_eq!(later.expect("not stuck behind the dropped leader").unwrap(), 2);
    }
}
