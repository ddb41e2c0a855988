//! Locks for no_std: [`Spin`] (gives up rather than wait without bound) and [`SetOnce`].

use core::mem::MaybeUninit;

/// A value behind a spin lock that gives up: [`Spin::with`] returns `None` rather than wait
/// without bound (a signal handler on the thread that holds the lock must not deadlock).
/// For the rare paths only (names resolved, redirected and delayed connects); never held
/// across a system call.
pub struct Spin<T> {
    locked: core::sync::atomic::AtomicBool,
    value: core::cell::UnsafeCell<T>,
}

// SAFETY: the value is reached only by the one caller that holds `locked`.
unsafe impl<T: Send> Sync for Spin<T> {}

impl<T> Spin<T> {
    pub const fn new(v: T) -> Spin<T> {
        Spin {
            locked: core::sync::atomic::AtomicBool::new(false),
            value: core::cell::UnsafeCell::new(v),
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        use core::sync::atomic::Ordering;
        let mut spins = 0u32;
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins > 1 << 22 {
                return None;
            }
            core::hint::spin_loop();
        }
        // SAFETY: `locked` is held: no other reference to the value exists until it is
        // released below.
        let r = f(unsafe { &mut *self.value.get() });
        self.locked.store(false, Ordering::Release);
        Some(r)
    }

    /// In a forked child (one thread): a lock another thread of the parent held at the fork
    /// would stay taken for ever, and every use would spin out its bound first.
    pub fn unlock_after_fork(&self) {
        self.locked
            .store(false, core::sync::atomic::Ordering::Release);
    }
}

/// A value set once, in the constructor, then read by any thread: std's `OnceLock`
/// without std (and without blocking: a second `set` fails instead of waiting).
pub struct SetOnce<T> {
    claimed: core::sync::atomic::AtomicBool,
    ready: core::sync::atomic::AtomicBool,
    value: core::cell::UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written once, by the one caller that claimed it, before `ready` is
// released; readers see it only after acquiring `ready`, and only share it (&T).
unsafe impl<T: Send + Sync> Sync for SetOnce<T> {}

impl<T> SetOnce<T> {
    pub const fn new() -> SetOnce<T> {
        SetOnce {
            claimed: core::sync::atomic::AtomicBool::new(false),
            ready: core::sync::atomic::AtomicBool::new(false),
            value: core::cell::UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    pub fn set(&self, v: T) -> Result<(), T> {
        use core::sync::atomic::Ordering::{AcqRel, Release};
        if self.claimed.swap(true, AcqRel) {
            return Err(v);
        }
        // SAFETY: only the one caller that claimed the cell writes, and no reader looks
        // before `ready`.
        unsafe { (*self.value.get()).write(v) };
        self.ready.store(true, Release);
        Ok(())
    }

    pub fn get(&self) -> Option<&T> {
        if self.ready.load(core::sync::atomic::Ordering::Acquire) {
            // SAFETY: ready is set only after the value was written, and it is never
            // written again.
            Some(unsafe { (*self.value.get()).assume_init_ref() })
        } else {
            None
        }
    }
}
