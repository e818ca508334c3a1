//! `AmQueue`: active messages of one id queued for receivers that wait for them.
//!
//! A handler ([`Worker::set_am_handler`]) runs inside progress and suits code that reacts to
//! each message there. A queue suits a thread that waits for its next message, as it waits for
//! a tag receive: the queue's handler keeps each message (header copied, payload kept with
//! [`AmMessage::keep`]) and wakes a sleeping receiver; [`Engine::am_recv`] spins driving
//! progress, then sleeps, until a message is there. No code of the receiver runs inside
//! progress, which is what the Go package needs (a Go function called from UCX's progress is a
//! cgo callback, the most expensive crossing there is).
//!
//! [`Engine::am_recv`]: crate::Engine::am_recv

use std::collections::VecDeque;
#[cfg(feature = "capi")]
use std::sync::Weak;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::am::{AmDesc, AmMessage};
use crate::endpoint::Endpoint;
use crate::engine::{Awaited, Signal, park_before};
use crate::status::Result;
use crate::worker::Worker;
#[cfg(feature = "capi")]
use crate::worker::WorkerInner;

/// An active message taken from an [`AmQueue`]. `Send`.
pub struct QueuedAm {
    /// A copy of the message header.
    pub header: Vec<u8>,
    /// The payload, kept (eager) or still at the sender (rendezvous): receive it with
    /// [`AmDesc::recv_into`]; dropping it releases it.
    pub payload: AmDesc,
    /// The endpoint to answer on, when the sender used [`AmFlags::REPLY`](crate::AmFlags::REPLY)
    /// and the endpoint is one of the worker's.
    pub reply_endpoint: Option<Endpoint>,
}

/// The state shared by the queue's owner and its handler (which the worker keeps).
struct Shared {
    /// The messages not taken yet; `None` once the queue is dropped (later messages are
    /// dropped: their payloads are released and rendezvous senders complete).
    items: Mutex<Option<VecDeque<QueuedAm>>>,
    /// `items`' length, read without the lock by waits that check for a message.
    len: AtomicUsize,
    /// Raised at every arrival: wakes the receivers sleeping in `Engine::am_recv`.
    arrival: Signal,
}

/// The queue of the active messages with one id on a worker: register it before traffic
/// starts; every message with that id waits in it until taken ([`try_recv`](AmQueue::try_recv),
/// [`Engine::am_recv`](crate::Engine::am_recv)), in arrival order. It replaces the id's handler
/// (as [`Worker::set_am_handler`] does); dropping the queue drops the messages still in it and
/// every later one with its id. `Send + Sync`: any number of threads may take from it.
pub struct AmQueue {
    shared: Arc<Shared>,
    /// The worker the messages arrive on (weak: the queue does not keep it alive), for the C
    /// ABI's check that a wait is on the right engine.
    #[cfg(feature = "capi")]
    worker: Weak<WorkerInner>,
}

impl AmQueue {
    /// Queues the active messages with `id` that reach `worker`. The queue is unbounded: a
    /// sender faster than its receivers grows it.
    pub fn new(worker: &Worker, id: u16) -> Result<AmQueue> {
        let shared = Arc::new(Shared {
            items: Mutex::new(Some(VecDeque::new())),
            len: AtomicUsize::new(0),
            arrival: Signal::new(),
        });
        let queue = Arc::clone(&shared);
        worker.set_am_handler(id, move |msg: AmMessage<'_>| queue.push(msg))?;
        Ok(AmQueue {
            shared,
            #[cfg(feature = "capi")]
            worker: worker.downgrade(),
        })
    }

    /// Whether the queue's messages arrive on `worker`.
    #[cfg(feature = "capi")]
    pub(crate) fn is_on(&self, worker: &Worker) -> bool {
        std::ptr::eq(self.worker.as_ptr(), Arc::as_ptr(&worker.0))
    }

    /// Takes the oldest message, if one is there (no progress is made: something else, e.g.
    /// [`Worker::progress`], must run the worker).
    pub fn try_recv(&self) -> Option<QueuedAm> {
        self.shared.pop()
    }

    /// The number of messages waiting.
    pub fn len(&self) -> usize {
        self.shared.len.load(Ordering::Acquire)
    }

    /// True when no message waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What `Engine::am_recv` waits on.
    pub(crate) fn awaited(&self) -> &impl Awaited {
        &*self.shared
    }
}

impl Drop for AmQueue {
    fn drop(&mut self) {
        let items = self
            .shared
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.shared.len.store(0, Ordering::Release);
        // Dropped outside the lock: releasing a payload calls into UCX.
        drop(items);
    }
}

impl Shared {
    /// Runs inside progress (the queue's handler): keeps the message and wakes the receivers.
    /// Once the queue is gone the message is left alone, and UCX releases it when the handler
    /// returns (a payload kept and released inside the handler would be returned to UCX twice).
    fn push(&self, msg: AmMessage<'_>) {
        {
            let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
            let Some(items) = items.as_mut() else {
                return;
            };
            items.push_back(QueuedAm {
                header: msg.header().to_vec(),
                reply_endpoint: msg.reply_endpoint(),
                payload: msg.keep(),
            });
            self.len.store(items.len(), Ordering::Release);
        }
        self.arrival.raise();
    }

    fn pop(&self) -> Option<QueuedAm> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        let items = items.as_mut()?;
        let item = items.pop_front();
        self.len.store(items.len(), Ordering::Release);
        item
    }
}

impl Awaited for Shared {
    #[inline(always)]
    fn is_ready(&self) -> bool {
        self.len.load(Ordering::Acquire) > 0
    }

    fn park_until(&self, deadline: Option<Instant>, stop: &dyn Fn() -> bool) -> bool {
        // Registered first, then checked: an arrival from now on unparks this thread.
        self.arrival.enter();
        while !self.is_ready() && !stop() && park_before(deadline) {}
        self.arrival.leave();
        self.is_ready()
    }
}
