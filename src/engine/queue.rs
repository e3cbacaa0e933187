//! The bounded per-model queue that device workers pull batches from.
//!
//! Workers are OS threads that block here when idle (Triton's instance model: whichever instance
//! is free takes the next batch), so a plain mutex + condvar fits better than an async channel.
//! Admission is all-or-nothing per request, so a multi-image request never half-enters.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::request::WorkItem;
use super::EngineError;

pub(crate) struct BatchQueue {
    state: Mutex<State>,
    wake: Condvar,
    capacity: usize,
    /// Counts items dropped because their client went away (they never answer, so nobody
    /// else can count them).
    disconnected: prometheus::IntCounter,
}

struct State {
    items: VecDeque<WorkItem>,
    closed: bool,
    /// How long the oldest item of the last batch taken had waited: what the queue currently
    /// costs an item that joins it, read when a full queue turns a request away.
    last_wait: Duration,
}

pub(crate) enum PushError {
    Full,
    Closed,
}

impl BatchQueue {
    pub fn new(capacity: usize, disconnected: prometheus::IntCounter) -> Self {
        Self {
            disconnected,
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
                last_wait: Duration::ZERO,
            }),
            wake: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves only a VecDeque behind, which is still valid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn depth(&self) -> usize {
        self.lock().items.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long the oldest item of the most recent batch waited between admission and a
    /// worker taking it. Under overload the queue is full at every admission, so this is the
    /// time a full queue takes to drain at the rate the workers are going.
    pub fn recent_wait(&self) -> Duration {
        self.lock().last_wait
    }

    /// Admits all of `items` or none of them.
    pub fn try_push_all(&self, items: Vec<WorkItem>) -> Result<(), (PushError, Vec<WorkItem>)> {
        let mut state = self.lock();
        if state.closed {
            return Err((PushError::Closed, items));
        }
        if state.items.len() + items.len() > self.capacity {
            return Err((PushError::Full, items));
        }
        state.items.extend(items);
        drop(state);
        // One worker, not all: every idle worker woken for nothing is a context switch on the
        // cores inference needs (rgc_fmnist, two workers, concurrency 1: 2.0 a request with
        // all woken, 1.2 with one). A worker that takes a batch and leaves items behind wakes
        // the next (`next_batch`).
        self.wake.notify_one();
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Stops admitting; workers drain what is queued and then see `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Blocks until a batch is available: up to `max_batch` items of the oldest item's kind
    /// (logits only, or anything else: [`WorkItem::logits_only`]), in arrival order, waiting at
    /// most `max_delay` after the oldest item arrived for the batch to fill. Items whose client
    /// has gone or whose deadline has passed are removed on the way and never reach the device.
    /// `None` once closed and empty.
    pub fn next_batch(&self, max_batch: usize, max_delay: Duration) -> Option<Vec<WorkItem>> {
        let mut state = self.lock();
        loop {
            self.prune(&mut state);
            // The oldest item decides the batch's kind, so neither kind waits behind the other
            // for longer than one batch.
            let Some(oldest) = state.items.front() else {
                if state.closed {
                    return None;
                }
                state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let (kind, fill_by) = (oldest.logits_only(), oldest.enqueued + max_delay);
            let same_kind = state
                .items
                .iter()
                .filter(|i| i.logits_only() == kind)
                .take(max_batch)
                .count();
            let now = Instant::now();
            if same_kind >= max_batch || state.closed || now >= fill_by {
                let batch = take_kind(&mut state.items, kind, max_batch);
                if let Some(first) = batch.first() {
                    state.last_wait = now.saturating_duration_since(first.enqueued);
                }
                if !state.items.is_empty() {
                    self.wake.notify_one();
                }
                return Some(batch);
            }
            state = self
                .wake
                .wait_timeout(state, fill_by - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Removes items whose client has gone (counted) or whose deadline passed (answered with
    /// `Timeout`, counted when their request fails).
    fn prune(&self, state: &mut State) {
        if state.items.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut kept = VecDeque::with_capacity(state.items.len());
        for item in state.items.drain(..) {
            if item.reply.is_closed() {
                self.disconnected.inc();
            } else if now >= item.deadline {
                let _ = item.reply.send(Err(EngineError::Timeout));
            } else {
                kept.push_back(item);
            }
        }
        state.items = kept;
    }
}

/// Removes and returns the first `max` items of `kind`, leaving the others in their order.
fn take_kind(items: &mut VecDeque<WorkItem>, kind: bool, max: usize) -> Vec<WorkItem> {
    if items.iter().take(max).all(|i| i.logits_only() == kind) {
        let n = items.len().min(max);
        return items.drain(..n).collect();
    }
    let mut batch = Vec::with_capacity(max);
    let mut rest = VecDeque::with_capacity(items.len());
    for item in items.drain(..) {
        if batch.len() < max && item.logits_only() == kind {
            batch.push(item);
        } else {
            rest.push_back(item);
        }
    }
    *items = rest;
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::request::{FrameSource, Stimulus};
    use std::sync::Arc;
    use tokio::sync::oneshot;

    fn counter() -> prometheus::IntCounter {
        prometheus::IntCounter::new("x", "x").unwrap()
    }

    fn item(
        deadline_in: Duration,
    ) -> (
        WorkItem,
        oneshot::Receiver<Result<super::super::ItemResult, EngineError>>,
    ) {
        item_for(deadline_in, &["logits"])
    }

    fn item_for(
        deadline_in: Duration,
        outputs: &[&str],
    ) -> (
        WorkItem,
        oneshot::Receiver<Result<super::super::ItemResult, EngineError>>,
    ) {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        (
            WorkItem {
                stimulus: Stimulus {
                    frames: vec![],
                    schedule: vec![FrameSource::Blank],
                },
                outputs: outputs.iter().map(|o| o.to_string()).collect(),
                enqueued: now,
                deadline: now + deadline_in,
                reply: tx,
            },
            rx,
        )
    }

    #[test]
    fn admission_is_all_or_nothing() {
        let q = BatchQueue::new(3, counter());
        let (a, _ra) = item(Duration::from_secs(9));
        let (b, _rb) = item(Duration::from_secs(9));
        assert!(q.try_push_all(vec![a, b]).is_ok());
        let (c, _rc) = item(Duration::from_secs(9));
        let (d, _rd) = item(Duration::from_secs(9));
        let Err((PushError::Full, back)) = q.try_push_all(vec![c, d]) else {
            panic!("expected Full")
        };
        assert_eq!(back.len(), 2);
        assert_eq!(q.depth(), 2);
    }

    #[test]
    fn recent_wait_is_the_last_batch_oldest_items_time_in_the_queue() {
        let q = BatchQueue::new(16, counter());
        assert_eq!(q.recent_wait(), Duration::ZERO, "nothing taken yet");
        let (a, _ra) = item(Duration::from_secs(9));
        q.try_push_all(vec![a]).ok().unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let (b, _rb) = item(Duration::from_secs(9));
        q.try_push_all(vec![b]).ok().unwrap();
        q.next_batch(1, Duration::ZERO).unwrap();
        let first = q.recent_wait();
        assert!(first >= Duration::from_millis(60), "{first:?}");
        // The next batch's oldest item arrived 60 ms later, so it waited less.
        q.next_batch(1, Duration::ZERO).unwrap();
        assert!(
            q.recent_wait() < first,
            "{:?} vs {first:?}",
            q.recent_wait()
        );
    }

    #[test]
    fn batches_up_to_max_and_skips_gone_and_expired() {
        let q = BatchQueue::new(16, counter());
        let mut keep = vec![];
        for _ in 0..5 {
            let (i, r) = item(Duration::from_secs(9));
            q.try_push_all(vec![i]).ok().unwrap();
            keep.push(r);
        }
        let (gone, r_gone) = item(Duration::from_secs(9));
        drop(r_gone);
        let (late, mut r_late) = item(Duration::ZERO);
        q.try_push_all(vec![gone, late]).ok().unwrap();
        let batch = q.next_batch(4, Duration::from_millis(0)).unwrap();
        assert_eq!(batch.len(), 4);
        assert_eq!(q.disconnected.get(), 1);
        assert!(matches!(r_late.try_recv(), Ok(Err(EngineError::Timeout))));
        let batch = q.next_batch(4, Duration::from_millis(0)).unwrap();
        assert_eq!(batch.len(), 1);
        q.close();
        assert!(q.next_batch(4, Duration::from_millis(0)).is_none());
    }

    #[test]
    fn logits_only_items_and_the_rest_go_in_separate_batches_oldest_first() {
        let q = BatchQueue::new(16, counter());
        let mut replies = vec![];
        let kinds: [&[&str]; 6] = [
            &["logits"],
            &["logits", "conv1"],
            &["logits"],
            &["conv2"],
            &["logits"],
            &["logits"],
        ];
        for outputs in kinds {
            let (i, r) = item_for(Duration::from_secs(9), outputs);
            q.try_push_all(vec![i]).ok().unwrap();
            replies.push(r);
        }
        let outputs = |batch: &[WorkItem]| -> Vec<String> {
            batch.iter().map(|i| i.outputs.join("+")).collect()
        };
        let first = q.next_batch(3, Duration::ZERO).unwrap();
        assert_eq!(outputs(&first), ["logits"; 3]);
        let second = q.next_batch(3, Duration::ZERO).unwrap();
        assert_eq!(outputs(&second), ["logits+conv1", "conv2"]);
        let third = q.next_batch(3, Duration::ZERO).unwrap();
        assert_eq!(outputs(&third), ["logits"]);
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn a_batch_of_one_kind_waits_to_fill_with_that_kind() {
        let q = BatchQueue::new(16, counter());
        let (a, _ra) = item_for(Duration::from_secs(9), &["logits"]);
        let (b, _rb) = item_for(Duration::from_secs(9), &["conv1"]);
        q.try_push_all(vec![a, b]).ok().unwrap();
        // Two items queued but only one of the oldest's kind: not full, so it waits the delay.
        let started = Instant::now();
        let batch = q.next_batch(2, Duration::from_millis(30)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn items_left_behind_by_a_batch_wake_the_next_idle_worker() {
        // Pushes wake one worker; more than one batch's worth must still reach every idle one.
        let q = Arc::new(BatchQueue::new(16, counter()));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let (q, done) = (q.clone(), done_tx.clone());
                std::thread::spawn(move || {
                    let batch = q.next_batch(1, Duration::ZERO).unwrap();
                    done.send(batch.len()).unwrap();
                    // Hold on so the other items cannot be taken by this worker.
                    std::thread::sleep(Duration::from_millis(200));
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50)); // all three waiting
        let (items, _replies): (Vec<_>, Vec<_>) =
            (0..3).map(|_| item(Duration::from_secs(9))).unzip();
        q.try_push_all(items).ok().unwrap();
        for _ in 0..3 {
            let n = done_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("every idle worker got a batch");
            assert_eq!(n, 1);
        }
        for w in workers {
            w.join().unwrap();
        }
    }

    #[test]
    fn waits_for_the_batch_to_fill_until_the_delay() {
        let q = Arc::new(BatchQueue::new(16, counter()));
        let (a, _ra) = item(Duration::from_secs(9));
        q.try_push_all(vec![a]).ok().unwrap();
        let q2 = q.clone();
        let pusher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let (b, rb) = item(Duration::from_secs(9));
            q2.try_push_all(vec![b]).ok().unwrap();
            rb
        });
        let batch = q.next_batch(2, Duration::from_secs(5)).unwrap();
        assert_eq!(batch.len(), 2, "the second item joined the batch");
        let _rb = pusher.join().unwrap();
    }
}
