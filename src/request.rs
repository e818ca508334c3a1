//! In-flight operations: `Request<B>` owns an operation's buffer until UCX completes it.
//!
//! Every operation passes UCX a callback and a strong reference to its `Completion` (as
//! `user_data`). The callback runs inside `ucp_worker_progress` on whichever thread progresses,
//! records the result and wakes a sleeping waiter. If the `Request` was dropped first, the buffer
//! was parked in the completion and the callback releases it and the UCX request.

use std::any::Any;
use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicI8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::engine::park_before;
use crate::status::{Error, Result, Status, StatusPtr, decode_status_ptr};
use crate::sys;
use crate::worker::Worker;

const PENDING: u32 = 0;
const DONE: u32 = 1;
const ORPHANED: u32 = 2;
/// Failed by swucx because the endpoint's peer died and UCX left the operation pending: the
/// owner sees the failure; the buffer is leaked, since UCX might still touch it.
const DETACHED: u32 = 3;
/// The bits of the state proper; a pending operation carries its sleeper's bits above them (the
/// ended states are these values alone).
const STATE: u32 = 3;
/// Or'ed onto PENDING while a thread sleeps in `park_until`: whoever ends the operation wakes
/// it. (One word for both, so ending and announcing a sleeper need no fences: each is a single
/// read-modify-write the other sees.)
const WAITED: u32 = 4;
/// Above WAITED, a pending operation counts (wrapping) the sleepers that announced themselves:
/// announcing changes the word even when an earlier sleeper withdrew, so an ender that read it
/// while that one slept fails its update, looks again and wakes the new sleeper, not the old.
/// (With the bare flag, a request waited on again from another thread, as a Go goroutine moves,
/// had the old sleeper woken and the new one sleep for ever.)
const ANNOUNCED_ONE: u32 = 8;

/// The shared record of one operation's outcome. Written by the UCX callback, read by the owner.
///
/// Two strong references exist while an operation runs: the owner's (in its `Request`) and
/// UCX's (its `user_data`, dropped by the callback). Finished completions are kept per thread for
/// reuse with both references still in place (see `Spare`), so an operation that completes at
/// once costs neither an allocation nor an atomic update of the reference count.
pub(crate) struct Completion {
    state: AtomicU32,
    status: AtomicI8,
    length: AtomicUsize,
    sender_tag: AtomicU64,
    /// The status given by `detach`.
    detach_status: AtomicI8,
    /// The buffer of a dropped, still running operation; freed by the callback.
    orphan: Mutex<Option<Box<dyn Any + Send>>>,
    /// The thread sleeping in `park_until` (set while the state carries WAITED).
    waiter: Mutex<Option<Thread>>,
    /// The operation runs on a SERIALIZED worker, whose operations are never used from two
    /// threads at once (`Worker::new_serialized`'s contract): ending it needs no atomic
    /// read-modify-write.
    exclusive: AtomicBool,
}

/// A completion kept for reuse (its operation ended; reset to pending). Holds two strong
/// references, the owner's and the one reserved for UCX's `user_data`; nothing else has one.
struct Spare(ManuallyDrop<Arc<Completion>>);

impl Spare {
    /// The completion, its reserved reference still counted.
    fn into_inner(mut self) -> Arc<Completion> {
        // SAFETY: taken once; `self` is forgotten right after, so Drop does not see it.
        let completion = unsafe { ManuallyDrop::take(&mut self.0) };
        std::mem::forget(self);
        completion
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        // SAFETY: the spare owns both references: release the reserved one, then the other.
        unsafe {
            Arc::decrement_strong_count(Arc::as_ptr(&self.0));
            ManuallyDrop::drop(&mut self.0);
        }
    }
}

/// How many spare completions a thread keeps.
const MAX_SPARE_COMPLETIONS: usize = 64;

/// A thread's spare completions: a fixed stack of cells, so taking or keeping one is a few
/// moves (a `RefCell<Vec>` cost ~40 instructions per call in its borrow flag and capacity
/// checks, on every operation's start and end).
struct SparePool {
    len: Cell<usize>,
    slots: [Cell<Option<Spare>>; MAX_SPARE_COMPLETIONS],
}

impl SparePool {
    fn take(&self) -> Option<Spare> {
        let n = self.len.get().checked_sub(1)?;
        self.len.set(n);
        self.slots[n].take()
    }

    fn keep(&self, spare: Spare) {
        let n = self.len.get();
        if let Some(slot) = self.slots.get(n) {
            slot.set(Some(spare));
            self.len.set(n + 1);
        }
    }
}

thread_local! {
    /// Finished completions nobody else references, reused to save an allocation per operation.
    static SPARE_COMPLETIONS: SparePool = const {
        SparePool {
            len: Cell::new(0),
            slots: [const { Cell::new(None) }; MAX_SPARE_COMPLETIONS],
        }
    };
}

impl Completion {
    fn fresh() -> Completion {
        Completion {
            state: AtomicU32::new(PENDING),
            status: AtomicI8::new(Status::INPROGRESS.0),
            length: AtomicUsize::new(0),
            sender_tag: AtomicU64::new(0),
            detach_status: AtomicI8::new(0),
            orphan: Mutex::new(None),
            waiter: Mutex::new(None),
            exclusive: AtomicBool::new(false),
        }
    }

    /// A pending completion with a second strong reference reserved for UCX (hand it over with
    /// `Arc::as_ptr`): a spare one of this thread's if there is one, else a new one. `exclusive`:
    /// the operation runs on a SERIALIZED worker.
    #[inline(always)]
    fn reserve(exclusive: bool) -> Arc<Completion> {
        let spare = SPARE_COMPLETIONS.with(SparePool::take);
        match spare {
            Some(spare) => {
                // Reset when it was kept (`recycle`), off the path that starts an operation.
                let completion = spare.into_inner();
                completion.exclusive.store(exclusive, Ordering::Relaxed);
                completion
            }
            None => {
                let completion = Arc::new(Completion::fresh());
                completion.exclusive.store(exclusive, Ordering::Relaxed);
                std::mem::forget(completion.clone());
                completion
            }
        }
    }

    /// Releases the owner's references: keeps the completion for reuse if nothing else (a
    /// waiter, an endpoint's in-flight list) can still reach it. Once the operation is DONE the
    /// reference reserved for UCX is the owner's too (UCX never took it, or the callback handed
    /// it back); otherwise UCX's callback still owns it (or the owner never had it back).
    fn recycle(completion: Arc<Completion>) {
        if completion.state.load(Ordering::Acquire) != DONE {
            return;
        }
        if Arc::strong_count(&completion) == 2 && Arc::weak_count(&completion) == 0 {
            // The counts were read relaxed: pair with the release of whoever dropped a reference
            // last (a waiter, the endpoint's list), before the completion is written again.
            std::sync::atomic::fence(Ordering::Acquire);
            // Nobody else can reach it now: plain stores reset it (its mutexes are empty).
            completion.state.store(PENDING, Ordering::Relaxed);
            completion
                .status
                .store(Status::INPROGRESS.0, Ordering::Relaxed);
            completion.length.store(0, Ordering::Relaxed);
            completion.sender_tag.store(0, Ordering::Relaxed);
            completion.detach_status.store(0, Ordering::Relaxed);
            let spare = Spare(ManuallyDrop::new(completion));
            SPARE_COMPLETIONS.with(|spares| spares.keep(spare));
            return;
        }
        // SAFETY: the reserved reference is the owner's to release; `completion` keeps the count
        // above zero.
        unsafe { Arc::decrement_strong_count(Arc::as_ptr(&completion)) };
    }

    #[inline(always)]
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state.load(Ordering::Acquire), DONE | DETACHED)
    }

    /// Moves a pending operation (waited for or not) to `to` (DONE, ORPHANED or DETACHED) and
    /// wakes its sleeper, if any; Err(state) if it was not pending. The sleeper's thread is
    /// read before the state changes: afterwards the owner may reuse the completion at any
    /// moment, so nothing here touches it after the final update. It is copied, not taken: if
    /// the update fails because another sleeper announced itself meanwhile, the thread read may
    /// be that one's, which the next try must find again (each sleeper clears its own).
    fn end_pending(&self, to: u32) -> std::result::Result<(), u32> {
        let mut current = self.state.load(Ordering::Acquire);
        if current == PENDING && self.exclusive.load(Ordering::Relaxed) {
            // Nobody else can touch an exclusive operation between this load and store (and
            // nobody sleeps on it: WAITED is not set).
            self.state.store(to, Ordering::Release);
            return Ok(());
        }
        loop {
            if current & STATE != PENDING {
                return Err(current);
            }
            let sleeper = if current & WAITED != 0 {
                self.waiter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            } else {
                None
            };
            let outcome =
                self.state
                    .compare_exchange(current, to, Ordering::AcqRel, Ordering::Acquire);
            // Woken in any case: if the state moved on meanwhile (withdrawn, ended by another
            // thread), a spurious wake-up only makes the sleeper look again.
            if let Some(thread) = sleeper {
                thread.unpark();
            }
            match outcome {
                Ok(_) => return Ok(()),
                Err(now) => current = now,
            }
        }
    }

    /// Fails a still-pending operation with `status` on behalf of a dead peer (see DETACHED).
    pub(crate) fn detach(&self, status: Status) {
        self.detach_status.store(status.0, Ordering::Relaxed);
        let _ = self.end_pending(DETACHED);
    }

    fn record(&self, status: Status, length: usize, sender_tag: u64) {
        self.status.store(status.0, Ordering::Relaxed);
        self.length.store(length, Ordering::Relaxed);
        self.sender_tag.store(sender_tag, Ordering::Relaxed);
    }

    /// Marks the operation done, which hands UCX's reference back to the owner; returns false
    /// if it was not pending (dropped by the owner, or detached), and the caller keeps it.
    fn finish(&self) -> bool {
        self.end_pending(DONE).is_ok()
    }

    /// Marks done an operation nobody can be waiting for yet (it completed inside the call that
    /// started it).
    fn finish_unwatched(&self) {
        self.state.store(DONE, Ordering::Release);
    }

    /// Announces the current thread as the sleeper (stored in `waiter` first); returns the
    /// state it set, or None if the operation already ended (no sleep needed).
    fn announce(&self) -> Option<u32> {
        *self.waiter.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current());
        let before = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s & STATE == PENDING).then(|| announced(s))
            })
            .ok()?;
        Some(announced(before))
    }

    /// Withdraws the sleeper `announce` set (`waited`: what it returned), if the operation is
    /// still pending (an ended operation keeps its final state); the count stays.
    fn withdraw(&self, waited: u32) {
        let _ = self.state.compare_exchange(
            waited,
            waited & !WAITED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Sleeps until the operation is done, `deadline` passes or `stop()` holds (checked whenever
    /// the thread wakes; whoever makes it true must unpark this thread); another thread must
    /// progress.
    pub(crate) fn park_until(&self, deadline: Option<Instant>, stop: &dyn Fn() -> bool) -> bool {
        if let Some(waited) = self.announce() {
            while !self.is_done() && !stop() && park_before(deadline) {}
            self.withdraw(waited);
        }
        self.waiter.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.is_done()
    }
}

/// The state a sleeper's announcement makes of the pending state `s`: WAITED, and one more
/// announcement counted.
fn announced(s: u32) -> u32 {
    (s & !WAITED).wrapping_add(ANNOUNCED_ONE) | WAITED
}

/// Runs inside `ucp_worker_progress` for every kind of operation.
///
/// # Safety
/// `user_data` is the `Arc<Completion>` raw pointer the operation handed to UCX; `request` is the
/// UCX request. Called at most once per operation.
unsafe fn complete(
    request: *mut libc::c_void,
    status: sys::ucs_status_t,
    length: usize,
    tag: u64,
    user_data: *mut libc::c_void,
) {
    // SAFETY: user_data is the strong reference given to UCX when the operation started; this
    // callback is its only consumer.
    let completion = unsafe { Arc::from_raw(user_data as *const Completion) };
    completion.record(Status::from_raw(status), length, tag);
    if completion.finish() {
        // The owner has UCX's reference back (see Completion::recycle).
        std::mem::forget(completion);
        return;
    }
    if completion.state.load(Ordering::Acquire) == ORPHANED {
        // The owner dropped the Request: release the UCX request and the parked buffer.
        // SAFETY: request is the live UCX request of this operation; nobody else frees it.
        unsafe { sys::ucp_request_free(request) };
        drop(
            completion
                .orphan
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }
}

pub(crate) unsafe extern "C" fn send_callback(
    request: *mut libc::c_void,
    status: sys::ucs_status_t,
    user_data: *mut libc::c_void,
) {
    // SAFETY: forwarded contract of `complete`; length 0 means "the whole buffer".
    unsafe { complete(request, status, usize::MAX, 0, user_data) }
}

pub(crate) unsafe extern "C" fn tag_recv_callback(
    request: *mut libc::c_void,
    status: sys::ucs_status_t,
    info: *const sys::ucp_tag_recv_info_t,
    user_data: *mut libc::c_void,
) {
    // SAFETY: UCX passes a valid info pointer for the duration of the callback (or NULL on error).
    let (length, tag) = match unsafe { info.as_ref() } {
        Some(info) => (info.length, info.sender_tag),
        None => (0, 0),
    };
    // SAFETY: forwarded contract of `complete`.
    unsafe { complete(request, status, length, tag, user_data) }
}

pub(crate) unsafe extern "C" fn length_callback(
    request: *mut libc::c_void,
    status: sys::ucs_status_t,
    length: usize,
    user_data: *mut libc::c_void,
) {
    // SAFETY: forwarded contract of `complete`.
    unsafe { complete(request, status, length, 0, user_data) }
}

/// What the operation was, for `Request::cancel` and for the reported length. A `u8` with every
/// value valid, so `Result<Request<B>>` takes its discriminant from a pointer's niche instead:
/// with an enum here it sat in this byte, and every move of the result copied the 7 bytes
/// around it in two overlapping loads that stalled on store forwarding (`perf annotate` of
/// `examples/op_cost.rs`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub(crate) struct OpKind(u8);

impl OpKind {
    pub(crate) const SEND: OpKind = OpKind(0);
    pub(crate) const TAG_RECV: OpKind = OpKind(1);
    pub(crate) const OTHER_RECV: OpKind = OpKind(2);
}

/// The result of a completed operation: the buffer handed back, and what was received.
#[derive(Debug)]
pub struct Done<B> {
    /// The operation's buffer, returned to the caller.
    pub buffer: B,
    /// Bytes sent, or bytes received into the buffer.
    pub length: usize,
    /// For tag receives: the tag the sender used.
    pub sender_tag: u64,
}

/// An operation in flight. Owns its buffer (and the memory regions it uses) until UCX completes
/// the operation; [`wait`](Request::wait) hands it back.
///
/// Dropping an unfinished `Request` does not stop the operation: the buffer stays alive until UCX
/// completes it. Only an unmatched tag receive can be cancelled ([`cancel`](Request::cancel));
/// closing the endpoint with [`CloseMode::Force`](crate::CloseMode::Force) ends the others.
///
/// `Send`: a request may be waited on from any thread.
pub struct Request<B: Send + 'static> {
    /// The worker that runs the operation; None when UCX completed it inside the starting call
    /// (nothing left to progress or free, and no reference count to update).
    worker: Option<Worker>,
    /// Taken out (and recycled) only in `Drop`.
    completion: ManuallyDrop<Arc<Completion>>,
    raw: *mut libc::c_void,
    buffer: Option<B>,
    buffer_len: usize,
    kind: OpKind,
    /// Objects UCX uses until completion besides the buffer (e.g. a remote key).
    keepalive: Option<Box<dyn Any + Send>>,
}

// SAFETY: the raw UCX request is only passed to UCX calls on a MULTI-mode worker, which are
// thread-safe; the completion is Sync; B is Send.
unsafe impl<B: Send + 'static> Send for Request<B> {}

/// The parameters every operation passes: callback, user data and, optionally, a memory handle.
pub(crate) struct OpParams {
    pub(crate) param: sys::ucp_request_param_t,
    op: &'static str,
    kind: OpKind,
    completion: Arc<Completion>,
    user_data: *mut libc::c_void,
}

/// Which callback an operation needs.
pub(crate) enum Callback {
    Send,
    TagRecv,
    Length,
}

impl OpParams {
    /// Starts the parameters for one operation (byte datatype, host memory: said to UCX only
    /// where it has other memory types to tell apart).
    /// `op` names the UCX call in errors; `kind` says what the request may do (cancel).
    #[inline(always)]
    pub(crate) fn new(
        worker: &Worker,
        op: &'static str,
        kind: OpKind,
        callback: Callback,
        memh: Option<sys::ucp_mem_h>,
        flags: u32,
    ) -> OpParams {
        let completion = Completion::reserve(!worker.is_multi());
        let user_data = Arc::as_ptr(&completion) as *mut libc::c_void;
        let mut param = base_param(worker, worker.op_attr_base(), memh, flags);
        param.user_data = user_data;
        param.cb = match callback {
            Callback::Send => sys::ucp_request_param_t__bindgen_ty_1 {
                send: Some(send_callback),
            },
            Callback::TagRecv => sys::ucp_request_param_t__bindgen_ty_1 {
                recv: Some(tag_recv_callback),
            },
            Callback::Length => sys::ucp_request_param_t__bindgen_ty_1 {
                recv_stream: Some(length_callback),
            },
        };
        OpParams {
            param,
            op,
            kind,
            completion,
            user_data,
        }
    }

    /// Turns what a `*_nbx` call returned into a `Request` owning `buffer`.
    ///
    /// `immediate_length` is the length to report if UCX completed the operation at once (UCX
    /// then does not call the callback); `None` means the buffer's length.
    #[inline(always)]
    pub(crate) fn finish<B: Send + 'static>(
        self,
        worker: &Worker,
        ptr: sys::ucs_status_ptr_t,
        buffer: B,
        buffer_len: usize,
        immediate_length: Option<usize>,
    ) -> Result<Request<B>> {
        let OpParams {
            completion,
            user_data,
            op,
            kind,
            ..
        } = self;
        let raw = match decode_status_ptr(ptr) {
            StatusPtr::Pending(raw) => raw,
            StatusPtr::Failed(status) => {
                // SAFETY: UCX did not take the callback, so the reference given as user_data is
                // still ours to release (`completion` keeps the count above zero).
                unsafe { Arc::decrement_strong_count(user_data as *const Completion) };
                return Err(Error::new(op, status));
            }
            StatusPtr::Done => {
                // UCX did not take the reference reserved for it (see Completion::recycle).
                completion.record(Status::OK, immediate_length.unwrap_or(buffer_len), 0);
                completion.finish_unwatched();
                std::ptr::null_mut()
            }
        };
        Ok(Request {
            worker: (!raw.is_null()).then(|| worker.clone()),
            completion: ManuallyDrop::new(completion),
            raw,
            buffer: Some(buffer),
            buffer_len,
            kind,
            keepalive: None,
        })
    }
}

/// The parameters of an operation on `worker` without its callback: `mask` (the worker's
/// `op_attr_base`, or less), byte datatype, host memory (read by UCX only when the mask has the
/// memory-type field), `memh` and `flags` when given.
#[inline(always)]
fn base_param(
    worker: &Worker,
    mask: u32,
    memh: Option<sys::ucp_mem_h>,
    flags: u32,
) -> sys::ucp_request_param_t {
    let mut param = sys::ucp_request_param_t {
        op_attr_mask: mask,
        datatype: worker.bytes_datatype(),
        memory_type: sys::ucs_memory_type::UCS_MEMORY_TYPE_HOST,
        ..Default::default()
    };
    if let Some(memh) = memh {
        param.op_attr_mask |= sys::ucp_op_attr_t::UCP_OP_ATTR_FIELD_MEMH.0;
        param.memh = memh;
    }
    if flags != 0 {
        param.op_attr_mask |= sys::ucp_op_attr_t::UCP_OP_ATTR_FIELD_FLAGS.0;
        param.flags = flags;
    }
    param
}

/// The parameters of a send that completes within its call or not at all
/// (`UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL`: UCX refuses it with `ERR_NO_RESOURCE` rather than make a
/// request). No request, so no callback and no completion record; UCX keeps no reference to the
/// buffers after the call. [`finish_now`] reads the result.
#[inline(always)]
pub(crate) fn now_param(
    worker: &Worker,
    memh: Option<sys::ucp_mem_h>,
    flags: u32,
) -> sys::ucp_request_param_t {
    use sys::ucp_op_attr_t as A;
    let mask = (worker.op_attr_base()
        & !(A::UCP_OP_ATTR_FIELD_CALLBACK.0 | A::UCP_OP_ATTR_FIELD_USER_DATA.0))
        | A::UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL.0;
    base_param(worker, mask, memh, flags)
}

/// The result of a send posted with [`now_param`] (`op` names the UCX call in errors). UCX
/// completes such a send within the call or refuses it without a request, so there is nothing
/// to wait for. Had UCX made a request anyway, returning would leave it a pointer into memory
/// the caller only lent for the call, and nothing could wait for it (it has no callback): the
/// process aborts instead.
#[inline(always)]
pub(crate) fn finish_now(op: &'static str, ptr: sys::ucs_status_ptr_t) -> Result<()> {
    match decode_status_ptr(ptr) {
        StatusPtr::Done => Ok(()),
        StatusPtr::Failed(status) => Err(Error::new(op, status)),
        StatusPtr::Pending(_) => {
            log::error!("UCX left a send posted for immediate completion running ({op}); aborting");
            std::process::abort();
        }
    }
}

impl<B: Send + 'static> Request<B> {
    /// A request that is already complete (used when no UCX call was needed).
    pub(crate) fn ready(buffer: B, length: usize) -> Request<B> {
        let completion = Completion::reserve(false);
        completion.record(Status::OK, length, 0);
        completion.finish_unwatched();
        Request {
            worker: None,
            completion: ManuallyDrop::new(completion),
            raw: std::ptr::null_mut(),
            buffer: Some(buffer),
            buffer_len: length,
            kind: OpKind::SEND,
            keepalive: None,
        }
    }

    /// Keeps `object` alive until the operation completes (with the buffer).
    pub(crate) fn keep_alive(mut self, object: impl Any + Send) -> Self {
        self.keepalive = Some(Box::new(object));
        self
    }

    /// True once UCX has completed the operation (successfully or not). Does not progress.
    #[inline(always)]
    pub fn is_complete(&self) -> bool {
        self.completion.is_done()
    }

    /// True once swucx gave the operation up because its endpoint's peer failed while UCX
    /// still held it (UCX 1.13 keeps some, e.g. rendezvous sends over shared memory, for good):
    /// it counts as complete and waiting returns the failure, but UCX may still read or write
    /// the buffer, so swucx never frees it (an owned buffer is leaked). Memory lent as a
    /// [`RawBuf`](crate::RawBuf) must then stay valid, and unused, for the rest of the process.
    pub fn is_detached(&self) -> bool {
        self.completion.state.load(Ordering::Acquire) == DETACHED
    }

    /// Progresses the worker once and tells whether the operation is complete.
    #[inline(always)]
    pub fn poll(&self) -> bool {
        if let Some(worker) = &self.worker {
            if !self.is_complete() {
                worker.progress();
            }
        }
        self.is_complete()
    }

    /// Progresses the worker (busy, then sleeping on its event fd) until the operation completes
    /// or `timeout` passes. Returns whether it completed.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        match &self.worker {
            Some(worker) => {
                worker.progress_until(|| self.is_complete(), Instant::now().checked_add(timeout))
            }
            None => Ok(true),
        }
    }

    /// Progresses the worker until the operation completes, then returns its result and buffer.
    #[inline(always)]
    pub fn wait(mut self) -> Result<Done<B>> {
        self.take_result()
    }

    /// Cancels the operation if UCX can: only a tag receive not matched yet. It then completes
    /// with `Status::ERR_CANCELED`. For any other operation this does nothing.
    pub fn cancel(&self) {
        if let Some(worker) = &self.worker {
            if self.kind == OpKind::TAG_RECV && !self.is_complete() && !self.raw.is_null() {
                let _gate = worker.gate();
                // SAFETY: raw is this operation's live request (freed only after completion).
                unsafe { sys::ucp_request_cancel(worker.handle(), self.raw) };
            }
        }
    }

    /// Returns the result of a completed operation; waits if it is not complete yet.
    #[inline(always)]
    pub(crate) fn take_result(&mut self) -> Result<Done<B>> {
        if let Some(worker) = &self.worker {
            if !self.is_complete() {
                worker.progress_until(|| self.is_complete(), None)?;
            }
        }
        self.release_raw();
        let buffer = self
            .buffer
            .take()
            .expect("a request's result is taken once");
        if self.completion.state.load(Ordering::Acquire) == DETACHED {
            let status = Status(self.completion.detach_status.load(Ordering::Relaxed));
            self.leak(buffer);
            return Err(Error::with_detail(
                "wait",
                status,
                "peer failed; UCX did not complete the operation",
            ));
        }
        let status = Status(self.completion.status.load(Ordering::Relaxed));
        if status.is_err() {
            let op = if self.kind == OpKind::SEND {
                "send"
            } else {
                "receive"
            };
            return Err(Error::new(op, status));
        }
        let length = match self.completion.length.load(Ordering::Relaxed) {
            usize::MAX => self.buffer_len,
            n => n,
        };
        Ok(Done {
            buffer,
            length,
            sender_tag: self.completion.sender_tag.load(Ordering::Relaxed),
        })
    }

    /// The worker that runs the operation; None once UCX completed it inside the starting call.
    #[cfg(feature = "capi")]
    pub(crate) fn worker(&self) -> Option<&Worker> {
        self.worker.as_ref()
    }

    /// The completion record, for the thread-safe front.
    pub(crate) fn completion(&self) -> &Arc<Completion> {
        &self.completion
    }

    /// Gives up a buffer UCX may still use (a detached operation): it is never freed.
    fn leak(&mut self, buffer: B) {
        std::mem::forget(buffer);
        std::mem::forget(self.keepalive.take());
    }

    #[inline(always)]
    fn release_raw(&mut self) {
        if let Some(worker) = &self.worker {
            if !self.raw.is_null() {
                // The operation is complete and the callback did not free the request (it frees
                // only orphaned ones): it is ours to free, once.
                worker.free_request(self.raw);
                self.raw = std::ptr::null_mut();
            }
        }
    }
}

impl<B: Send + 'static> Drop for Request<B> {
    #[inline(always)]
    fn drop(&mut self) {
        self.release_buffer();
        // SAFETY: the completion is taken exactly once, here, and never used afterwards.
        let completion = unsafe { ManuallyDrop::take(&mut self.completion) };
        Completion::recycle(completion);
    }
}

impl<B: Send + 'static> Request<B> {
    /// Frees the buffer and the UCX request of a dropped request, or hands them to the callback
    /// if UCX is still running the operation.
    #[inline(always)]
    fn release_buffer(&mut self) {
        let Some(buffer) = self.buffer.take() else {
            return;
        };
        let mut state = self.completion.state.load(Ordering::Acquire);
        if state & STATE == PENDING {
            // An unmatched tag receive would stay posted forever: cancel it (it then completes).
            self.cancel();
            // Still in flight: park the buffer where the callback will find it, then hand over.
            *self
                .completion
                .orphan
                .lock()
                .unwrap_or_else(|e| e.into_inner()) =
                Some(Box::new((buffer, self.keepalive.take())));
            match self.completion.end_pending(ORPHANED) {
                Ok(_) => return,
                Err(now) => state = now,
            }
            // Finished meanwhile: the buffer is ours again.
            let parked = self
                .completion
                .orphan
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            self.release_raw();
            if state == DETACHED {
                std::mem::forget(parked);
            }
            return;
        }
        self.release_raw();
        if state == DETACHED {
            self.leak(buffer);
        }
    }
}

impl<B: Send + 'static> std::fmt::Debug for Request<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("kind", &self.kind)
            .field("complete", &self.is_complete())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The callback's side of an operation that was pending: UCX's reference arrives as a raw
    /// pointer, as in `complete`.
    fn callback_finishes(user_data: *const Completion) {
        // SAFETY: user_data is the reference reserved for UCX by `reserve`, consumed once here.
        let completion = unsafe { Arc::from_raw(user_data) };
        completion.record(Status::OK, 8, 0);
        if completion.finish() {
            std::mem::forget(completion);
        }
    }

    #[test]
    fn a_sleeper_is_always_woken_and_the_completion_comes_back_whole() {
        // One thread sleeps on the completion while another finishes it, racing on purpose:
        // the sleeper must wake every time (no lost wake-up without the old fences), and the
        // finished completion must hold exactly the owner's two references again.
        for _ in 0..20_000 {
            let completion = Completion::reserve(false);
            let user_data = Arc::as_ptr(&completion) as usize;
            let finisher = std::thread::spawn(move || callback_finishes(user_data as *const _));
            let deadline = Instant::now() + Duration::from_secs(5);
            assert!(
                completion.park_until(Some(deadline), &|| false),
                "sleeper not woken"
            );
            finisher.join().unwrap();
            assert_eq!(completion.state.load(Ordering::Acquire), DONE);
            assert_eq!(Arc::strong_count(&completion), 2);
            Completion::recycle(completion);
        }
    }

    #[test]
    fn a_later_sleeper_is_woken_not_an_earlier_one() {
        // Sleeper A announces itself, times out and withdraws; then the request is waited on
        // from another thread (a Go goroutine that moved), B. A callback that read the state
        // while A slept must not end the operation with that stale view: it would wake A and
        // leave B asleep for ever. It fails, looks again and wakes B.
        let completion = Completion::reserve(false);
        let seen = completion.announce().expect("pending");
        completion.withdraw(seen);
        completion.waiter.lock().unwrap().take();
        let shared = completion.clone();
        let b = std::thread::spawn(move || shared.park_until(None, &|| false));
        while completion.state.load(Ordering::Acquire) & WAITED == 0 {
            std::thread::yield_now();
        }
        assert!(
            completion
                .state
                .compare_exchange(seen, DONE, Ordering::AcqRel, Ordering::Acquire)
                .is_err(),
            "announcing again must change the state"
        );
        callback_finishes(Arc::as_ptr(&completion));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !b.is_finished() {
            assert!(Instant::now() < deadline, "the later sleeper was not woken");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(b.join().unwrap(), "woken by the completion");
        Completion::recycle(completion);
    }

    #[test]
    fn a_reused_completion_starts_pending() {
        let completion = Completion::reserve(false);
        let first = Arc::as_ptr(&completion);
        callback_finishes(first);
        Completion::recycle(completion);
        let again = Completion::reserve(false);
        assert_eq!(Arc::as_ptr(&again), first, "the spare is reused");
        assert!(!again.is_done());
        assert_eq!(again.status.load(Ordering::Relaxed), Status::INPROGRESS.0);
        assert_eq!(Arc::strong_count(&again), 2);
        callback_finishes(Arc::as_ptr(&again));
        Completion::recycle(again);
    }

    #[test]
    fn an_exclusive_completion_ends_once_and_comes_back_whole() {
        // Finished by the callback: reusable with both references, as a shared one.
        let completion = Completion::reserve(true);
        callback_finishes(Arc::as_ptr(&completion));
        assert_eq!(completion.state.load(Ordering::Acquire), DONE);
        assert_eq!(Arc::strong_count(&completion), 2);
        Completion::recycle(completion);
        // Dropped by its owner first: the callback then finds it orphaned and keeps its hands off.
        let completion = Completion::reserve(true);
        assert!(completion.exclusive.load(Ordering::Relaxed));
        assert_eq!(completion.end_pending(ORPHANED), Ok(()));
        assert_eq!(completion.end_pending(DONE), Err(ORPHANED));
        // SAFETY: the reference reserved for UCX, released once as the callback would.
        unsafe { Arc::decrement_strong_count(Arc::as_ptr(&completion)) };
        let watcher = Arc::downgrade(&completion);
        Completion::recycle(completion);
        assert_eq!(watcher.strong_count(), 0);
        // A spare handed to a MULTI worker's operation is not exclusive any more.
        let completion = Completion::reserve(false);
        assert!(!completion.exclusive.load(Ordering::Relaxed));
        callback_finishes(Arc::as_ptr(&completion));
        Completion::recycle(completion);
    }

    #[test]
    fn an_owner_that_still_shares_the_completion_releases_its_references() {
        let completion = Completion::reserve(false);
        callback_finishes(Arc::as_ptr(&completion));
        let watcher = Arc::downgrade(&completion);
        Completion::recycle(completion);
        // Not pooled (a Weak could still reach it), and both references were released.
        assert_eq!(watcher.strong_count(), 0);
    }
}
