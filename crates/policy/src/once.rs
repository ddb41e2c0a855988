//! Storage that is filled at most once, later than the policy is built, without a lock.
//!
//! The precomputed plans of a policy ([`crate::plan::FixedPlans`]) are worth having for
//! the sockets of a role the program uses, and cost every exec under sockwrap when they
//! are all built at load (~6,400 instructions and 4 KiB for three flags, in a program that
//! may never open a socket). So each decision's plans are built by the first socket that
//! needs them, into room reserved (not written: untouched arena pages cost nothing) when
//! the policy was built.
//!
//! The library's hooks read the policy from any thread and from signal handlers, and must
//! not allocate, lock or wait. Hence:
//! * the room is allocated with the policy; filling it allocates nothing;
//! * one compare-and-swap picks the one filler; the contents are published by a release
//!   store of the state and read only after an acquire load sees it;
//! * whoever finds a fill in progress (another thread, or a signal handler that interrupted
//!   the filler on its own thread) does not wait: it gets `None` and takes the general path,
//!   which gives the same plan. A fill that runs out of room gives up for good, the same way.
//! * a child forked while another thread was filling inherits the fill "in progress" and
//!   takes the general path for that decision: slower, never wrong.
//!
//! The only `unsafe` of the crate, on an allow-list (see lib.rs): the compiler cannot see
//! that the state machine above keeps the writer and the readers apart.

#[allow(unused_imports)]
use crate::prelude::*;
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

const EMPTY: u8 = 0;
const FILLING: u8 = 1;
const READY: u8 = 2;
const GAVE_UP: u8 = 3;

/// A header `H` and up to `capacity` items `T`, filled once (see the module note).
pub(crate) struct FillOnce<H: Copy + Default, T: Copy> {
    state: AtomicU8,
    capacity: usize,
    /// Written only by the filler while `state` is FILLING; read only once it is READY.
    inner: UnsafeCell<Inner<H, T>>,
}

struct Inner<H, T> {
    head: H,
    len: usize,
    buf: Box<[MaybeUninit<T>]>,
}

// SAFETY: `inner` is written by one thread only (the one whose compare-and-swap moved the
// state from EMPTY to FILLING), and read by any thread only after it has seen READY with an
// acquire load that pairs with the filler's release store; after READY nothing writes it.
// H and T are Copy, plain values without interior mutability of their own.
unsafe impl<H: Copy + Default + Send, T: Copy + Send> Sync for FillOnce<H, T> {}

/// What a fill writes into: the header, and items pushed in order.
pub(crate) struct Filler<'a, H, T> {
    pub head: &'a mut H,
    len: &'a mut usize,
    buf: &'a mut [MaybeUninit<T>],
}

impl<H, T> Filler<'_, H, T> {
    /// Appends `v`; `false` when the room is full.
    pub fn push(&mut self, v: T) -> bool {
        match self.buf.get_mut(*self.len) {
            Some(slot) => {
                slot.write(v);
                *self.len += 1;
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        *self.len
    }
}

impl<H: Copy + Default, T: Copy> FillOnce<H, T> {
    /// Empty, with room for `capacity` items (allocated, not written).
    pub fn with_capacity(capacity: usize) -> Self {
        FillOnce {
            state: AtomicU8::new(EMPTY),
            capacity,
            inner: UnsafeCell::new(Inner {
                head: H::default(),
                len: 0,
                buf: Box::new_uninit_slice(capacity),
            }),
        }
    }

    /// Never filled: `get_or_fill` always gives `None`.
    pub fn never() -> Self {
        let c = FillOnce::with_capacity(0);
        c.state.store(GAVE_UP, Ordering::Relaxed);
        c
    }

    /// The contents once filled. If nobody has filled them yet, this call fills them with
    /// `fill` (which returns `false` to give up, as when `push` finds no room). `None` when
    /// a fill is in progress elsewhere or was given up: the caller takes the general path.
    #[inline]
    pub fn get_or_fill(
        &self,
        fill: impl FnOnce(&mut Filler<'_, H, T>) -> bool,
    ) -> Option<(&H, &[T])> {
        if self.state.load(Ordering::Acquire) == READY {
            // SAFETY: READY, seen with an acquire load.
            return Some(unsafe { self.contents() });
        }
        self.fill_now(fill)
    }

    /// The first call (or one that meets a fill in progress, or given up).
    #[cold]
    #[inline(never)]
    fn fill_now(&self, fill: impl FnOnce(&mut Filler<'_, H, T>) -> bool) -> Option<(&H, &[T])> {
        let state =
            match self
                .state
                .compare_exchange(EMPTY, FILLING, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => {
                    // SAFETY: the compare-and-swap made this call the only writer, and no
                    // reader looks inside before READY.
                    let inner = unsafe { &mut *self.inner.get() };
                    let mut f = Filler {
                        head: &mut inner.head,
                        len: &mut inner.len,
                        buf: &mut inner.buf,
                    };
                    let done = if fill(&mut f) { READY } else { GAVE_UP };
                    self.state.store(done, Ordering::Release);
                    done
                }
                Err(now) => now,
            };
        // SAFETY: READY was seen with an acquire load, or set by this thread.
        (state == READY).then(|| unsafe { self.contents() })
    }

    /// # Safety
    /// The state must be READY, seen by this thread with an acquire load (or set by it):
    /// the filler's writes are then visible and none follow; its first `len` items were
    /// written.
    #[inline]
    unsafe fn contents(&self) -> (&H, &[T]) {
        // SAFETY: as the function's contract says.
        unsafe {
            let inner = &*self.inner.get();
            let start = core::ptr::NonNull::from(&*inner.buf).cast::<T>();
            let items = core::slice::from_raw_parts(start.as_ptr(), inner.len);
            (&inner.head, items)
        }
    }
}

/// A copy starts empty, with the same room: the contents are a cache of what the rest of
/// the policy says, and are filled again on first use.
impl<H: Copy + Default, T: Copy> Clone for FillOnce<H, T> {
    fn clone(&self) -> Self {
        if self.state.load(Ordering::Relaxed) == GAVE_UP && self.capacity == 0 {
            return FillOnce::never();
        }
        FillOnce::with_capacity(self.capacity)
    }
}

impl<H: Copy + Default, T: Copy> core::fmt::Debug for FillOnce<H, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = match self.state.load(Ordering::Acquire) {
            EMPTY => "empty",
            FILLING => "filling",
            READY => "ready",
            _ => "gave up",
        };
        f.debug_struct("FillOnce")
            .field("state", &state)
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_once_and_keeps_what_was_filled() {
        let c: FillOnce<u8, u32> = FillOnce::with_capacity(3);
        let mut calls = 0;
        for _ in 0..3 {
            let (h, items) = c
                .get_or_fill(|f| {
                    calls += 1;
                    *f.head = 7;
                    f.push(1) && f.push(2)
                })
                .expect("filled");
            assert_eq!((*h, items), (7, &[1, 2][..]));
        }
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_fill_that_runs_out_of_room_gives_up_for_good() {
        let c: FillOnce<(), u32> = FillOnce::with_capacity(1);
        assert!(c.get_or_fill(|f| f.push(1) && f.push(2)).is_none());
        assert!(c.get_or_fill(|_| true).is_none(), "not filled again");
    }

    #[test]
    fn a_fill_in_progress_is_not_waited_for() {
        let c: FillOnce<(), u32> = FillOnce::with_capacity(1);
        let got = c.get_or_fill(|f| {
            // What a signal handler on the filling thread would see.
            assert!(c.get_or_fill(|_| true).is_none());
            f.push(5)
        });
        assert_eq!(got.map(|(_, i)| i.to_vec()), Some(vec![5]));
    }

    #[test]
    fn threads_agree_on_one_fill() {
        let c: FillOnce<u64, u64> = FillOnce::with_capacity(64);
        let fills = core::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (c, fills) = (&c, &fills);
                s.spawn(move || {
                    for _ in 0..1000 {
                        if let Some((h, items)) = c.get_or_fill(|f| {
                            fills.fetch_add(1, Ordering::Relaxed);
                            *f.head = t;
                            (0..64).all(|i| f.push(t * 100 + i))
                        }) {
                            assert_eq!(items.len(), 64);
                            assert!(items
                                .iter()
                                .enumerate()
                                .all(|(i, &v)| v == *h * 100 + i as u64));
                        }
                    }
                });
            }
        });
        assert_eq!(fills.load(Ordering::Relaxed), 1);
        assert!(c.get_or_fill(|_| false).is_some());
    }

    #[test]
    fn never_is_never_filled() {
        let c: FillOnce<(), u32> = FillOnce::never();
        assert!(c.get_or_fill(|_| true).is_none());
        assert!(c.clone().get_or_fill(|_| true).is_none());
    }

    #[test]
    fn a_clone_starts_empty() {
        let c: FillOnce<(), u32> = FillOnce::with_capacity(2);
        assert!(c.get_or_fill(|f| f.push(1)).is_some());
        let d = c.clone();
        let got = d.get_or_fill(|f| f.push(9)).map(|(_, i)| i.to_vec());
        assert_eq!(got, Some(vec![9]));
    }
}
