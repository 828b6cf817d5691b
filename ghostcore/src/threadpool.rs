//! A persistent thread pool for the per-token compute path.
//!
//! Workers stay alive for the pool's lifetime. A dispatch ([`ThreadPool::run`]) publishes a
//! job, wakes the workers (they spin briefly, then park on a condition variable), and the
//! calling thread runs its own share of the job. Work inside a job is usually split with an
//! atomic chunk counter ([`ThreadPool::for_each_chunk`]). A panic in any participant is
//! captured and re-raised on the caller once every participant has finished.

use std::any::Any;
use std::cell::UnsafeCell;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// How many times a worker polls for new work before parking.
const SPIN_ITERS: u32 = 5_000;

type JobFn = dyn Fn(usize) + Sync;

/// Bit of [`Shared::state`] set once the dispatcher stops admitting workers to the job.
const CLOSED: u64 = 1 << 31;
/// Mask of the admitted-worker count in [`Shared::state`].
const COUNT_MASK: u64 = CLOSED - 1;

struct Shared {
    /// `generation << 32 | CLOSED? | admitted workers`. A dispatch bumps the generation
    /// (count 0, open); a worker that sees a new generation joins by incrementing the count
    /// while the job is open; the dispatcher closes the job when its own share is done, so
    /// workers that were not scheduled in time never delay it.
    state: AtomicU64,
    /// The job of the current generation. Written only by the dispatching thread while no
    /// worker is running a job (all admitted workers finished the previous one).
    job: UnsafeCell<Option<*const JobFn>>,
    /// Admitted workers that finished the current generation's job.
    done: AtomicUsize,
    /// Workers currently parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is only written by the dispatcher between jobs (after the previous job was
// closed and every admitted worker finished it, so no worker reads it) and only read by
// workers admitted to the current job, after they observed its opening
// (Acquire), which happens after the write (Release). The pointee is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: see above; the raw pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// A fixed set of worker threads plus the calling thread.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    n_threads: usize,
    /// Serializes dispatches if the pool is shared between threads.
    dispatch: Mutex<()>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("n_threads", &self.n_threads)
            .finish()
    }
}

impl ThreadPool {
    /// A pool of `n_threads` participants in total (the caller counts as one, so
    /// `n_threads - 1` workers are spawned). `n_threads == 0` means one per available core.
    pub fn new(n_threads: usize) -> crate::Result<ThreadPool> {
        let n_threads = if n_threads == 0 {
            default_threads()
        } else {
            n_threads
        };
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            done: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            panic: Mutex::new(None),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut workers = Vec::with_capacity(n_threads - 1);
        for index in 1..n_threads {
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("ghost-worker-{index}"))
                .spawn(move || worker_loop(&shared, index))
                .map_err(|e| crate::Error::Internal(format!("cannot spawn worker thread: {e}")))?;
            workers.push(handle);
        }
        Ok(ThreadPool {
            shared,
            workers,
            n_threads,
            dispatch: Mutex::new(()),
        })
    }

    /// Number of participants (workers + caller).
    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Runs `f(thread_index)` on the caller (index 0) and on every worker that wakes up in
    /// time to join (indices `1..n_threads`), and returns when all who joined have finished.
    /// Work must therefore be shared dynamically (see [`ThreadPool::for_each_chunk`]), not
    /// assigned per index. A panic in any participant is re-raised here.
    pub fn run<F: Fn(usize) + Sync>(&self, f: F) {
        if self.n_threads == 1 {
            f(0);
            return;
        }
        let _guard = self.dispatch.lock().unwrap_or_else(|e| e.into_inner());
        let shared = &*self.shared;
        let job: &(dyn Fn(usize) + Sync + '_) = &f;
        // SAFETY: erasing the lifetime is sound because this function does not return before
        // every admitted worker finished running the job (`done` reaches the admitted count
        // below, after the job was closed to new workers), and the pointer is cleared before
        // returning. No worker reads `job` now: the previous job was closed and drained.
        unsafe {
            let job: &'static JobFn =
                std::mem::transmute::<&(dyn Fn(usize) + Sync + '_), &'static JobFn>(job);
            *shared.job.get() = Some(job as *const JobFn);
        }
        shared.done.store(0, Ordering::SeqCst);
        let gen = (shared.state.load(Ordering::SeqCst) >> 32).wrapping_add(1) & 0xFFFF_FFFF;
        shared.state.store(gen << 32, Ordering::SeqCst);
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        let admitted = (shared.state.fetch_or(CLOSED, Ordering::SeqCst) & COUNT_MASK) as usize;
        let mut spins = 0u32;
        while shared.done.load(Ordering::Acquire) != admitted {
            spins = spins.wrapping_add(1);
            if spins < SPIN_ITERS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: the job is closed and every admitted worker finished it; nobody reads `job`
        // until the next dispatch publishes a new one.
        unsafe {
            *shared.job.get() = None;
        }
        if let Err(p) = mine {
            resume_unwind(p);
        }
        let worker_panic = shared
            .panic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(p) = worker_panic {
            resume_unwind(p);
        }
    }

    /// Splits `0..n_items` into chunks of `chunk` items handed out through an atomic
    /// counter; `f(thread_index, range)` is called for each chunk.
    pub fn for_each_chunk<F: Fn(usize, Range<usize>) + Sync>(
        &self,
        n_items: usize,
        chunk: usize,
        f: F,
    ) {
        if n_items == 0 {
            return;
        }
        let chunk = chunk.max(1);
        if self.n_threads == 1 || n_items <= chunk {
            f(0, 0..n_items);
            return;
        }
        let next = AtomicUsize::new(0);
        self.run(|tid| loop {
            let start = next.fetch_add(chunk, Ordering::Relaxed);
            if start >= n_items {
                break;
            }
            f(tid, start..(start + chunk).min(n_items));
        });
    }

    /// A chunk size that gives each participant several chunks of at least `min_chunk`
    /// items (rounded up to a multiple of `align`).
    pub fn chunk_size(&self, n_items: usize, min_chunk: usize, align: usize) -> usize {
        let per = n_items.div_ceil(self.n_threads * 4).max(min_chunk).max(1);
        per.div_ceil(align.max(1)) * align.max(1)
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.state.fetch_add(1 << 32, Ordering::SeqCst);
        {
            let _l = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker_loop(shared: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        let gen_of = |st: u64| st >> 32;
        let mut spins = 0u32;
        let mut st = shared.state.load(Ordering::Acquire);
        while gen_of(st) == seen && spins < SPIN_ITERS {
            std::hint::spin_loop();
            spins += 1;
            st = shared.state.load(Ordering::Acquire);
        }
        if gen_of(st) == seen {
            let mut l = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.sleepers.fetch_add(1, Ordering::SeqCst);
            loop {
                st = shared.state.load(Ordering::SeqCst);
                if gen_of(st) != seen || shared.shutdown.load(Ordering::SeqCst) {
                    break;
                }
                l = shared.wake.wait(l).unwrap_or_else(|e| e.into_inner());
            }
            shared.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        seen = gen_of(st);
        // Join the job if it is still open for this generation.
        let mut cur = st;
        let admitted = loop {
            if gen_of(cur) != seen || cur & CLOSED != 0 {
                break false;
            }
            match shared.state.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break true,
                Err(now) => cur = now,
            }
        };
        if !admitted {
            continue;
        }
        // SAFETY: the dispatcher published `job` before opening this generation, and keeps
        // the closure alive until every admitted worker (we are one) has bumped `done`.
        let job = unsafe { *shared.job.get() };
        if let Some(job) = job {
            // SAFETY: as above, the pointee outlives this call.
            let job: &JobFn = unsafe { &*job };
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| job(index))) {
                let mut slot = shared.panic.lock().unwrap_or_else(|e| e.into_inner());
                if slot.is_none() {
                    *slot = Some(p);
                }
            }
        }
        shared.done.fetch_add(1, Ordering::AcqRel);
    }
}

/// One thread per available core (at least 1).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A mutable slice written concurrently by pool participants at disjoint indices.
pub struct DisjointSlice<'a, T> {
    ptr: *mut T,
    len: usize,
    _marker: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: callers promise (by the `unsafe` on the accessors) that concurrent accesses touch
// disjoint index ranges, so sharing the pointer between threads is sound for `T: Send`.
unsafe impl<T: Send> Sync for DisjointSlice<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for DisjointSlice<'_, T> {}

impl<'a, T> DisjointSlice<'a, T> {
    pub fn new(slice: &'a mut [T]) -> Self {
        DisjointSlice {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _marker: std::marker::PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A mutable view of `range`.
    ///
    /// # Safety
    /// No other live view obtained from this `DisjointSlice` may overlap `range`.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range_mut(&self, range: Range<usize>) -> &mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "DisjointSlice range out of bounds"
        );
        // SAFETY: in bounds (checked); exclusivity is the caller's contract.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.end - range.start)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_always_runs_and_workers_at_most_once() {
        for n in 1..=4 {
            let pool = ThreadPool::new(n).unwrap();
            for _ in 0..100 {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(|tid| {
                    hits[tid].fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(hits[0].load(Ordering::Relaxed), 1);
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) <= 1));
            }
        }
    }

    #[test]
    fn chunks_cover_range_exactly_once() {
        let pool = ThreadPool::new(3).unwrap();
        let n = 1000;
        let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        pool.for_each_chunk(n, 7, |_, r| {
            for i in r {
                seen[i].fetch_add(1, Ordering::Relaxed);
            }
        });
        assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn panic_is_reraised_and_pool_survives() {
        let pool = ThreadPool::new(2).unwrap();
        for _ in 0..20 {
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.for_each_chunk(64, 1, |_, r| {
                    if r.start == 37 {
                        panic!("boom");
                    }
                })
            }));
            assert!(r.is_err());
        }
        let count = AtomicUsize::new(0);
        pool.for_each_chunk(100, 3, |_, r| {
            count.fetch_add(r.len(), Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn disjoint_writes() {
        let pool = ThreadPool::new(2).unwrap();
        let mut out = vec![0usize; 500];
        let d = DisjointSlice::new(&mut out);
        pool.for_each_chunk(500, 13, |_, r| {
            // SAFETY: chunks from for_each_chunk are disjoint.
            let s = unsafe { d.range_mut(r.clone()) };
            for (k, v) in s.iter_mut().enumerate() {
                *v = r.start + k;
            }
        });
        assert!(out.iter().enumerate().all(|(i, &v)| i == v));
    }
}
