//! The library's allocator: a bump arena in `.bss`, then libc's malloc.
//!
//! Nearly everything the library allocates, it allocates once, in the constructor (the
//! policy), and keeps for the life of the process. Serving that from a static arena means:
//! * a program under sockwrap whose own code never calls malloc (many small tools) does not
//!   pay for initialising malloc (three system calls and its first heap pages) because of
//!   us;
//! * our allocations never sit in the program's heap, and the constructor works even when
//!   the program brings its own malloc that is not ready yet.
//!
//! Freeing arena memory gives back only the most recent block (what a growing Vec or a
//! temporary string does); anything else stays used until exit, bounded by the arena's
//! size. When the arena is full, allocations go to libc's malloc (as std's `System` does).
//! Untouched arena pages cost nothing: `.bss` is mapped, not backed, until written.
//! Lock-free (one compare-and-swap per allocation), so safe from any thread.
//!
//! Written here because no crate does "bump first, then System" for a `cdylib` without
//! pulling in more than these forty lines.

#[allow(unused_imports)]
use crate::prelude::*;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};
// libc's allocator through lazily bound shells: most processes never get past the arena.
use crate::sys::lazy;

const SIZE: usize = 256 * 1024;

// Not page-aligned: the arena then starts on the page of the library's other statics
// (.data and the first bytes of .bss), which every exec touches anyway, so a small policy
// costs no page of its own.
#[repr(C, align(16))]
struct Space(UnsafeCell<[u8; SIZE]>);

// SAFETY: the bytes are handed out in disjoint blocks, each to one owner (see `alloc`).
unsafe impl Sync for Space {}

static SPACE: Space = Space(UnsafeCell::new([0; SIZE]));
/// Offset of the first free byte.
static NEXT: AtomicUsize = AtomicUsize::new(0);

pub struct Arena;

fn base() -> usize {
    SPACE.0.get() as usize
}

fn in_arena(p: *mut u8) -> bool {
    let a = p as usize;
    a >= base() && a < base() + SIZE
}

/// libc's allocator, as std's `System` uses it: malloc when its 16-byte alignment is
/// enough, posix_memalign otherwise.
struct System;

/// What glibc's malloc guarantees on x86_64 and aarch64.
const MALLOC_ALIGN: usize = 16;

impl System {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN && layout.align() <= layout.size() {
            // SAFETY: plain malloc.
            unsafe { lazy::sockwrap_malloc(layout.size()) as *mut u8 }
        } else {
            let mut out: *mut libc::c_void = core::ptr::null_mut();
            let align = layout.align().max(core::mem::size_of::<usize>());
            // SAFETY: align is a power of two and a multiple of the pointer size.
            match unsafe { lazy::sockwrap_posix_memalign(&mut out, align, layout.size()) } {
                0 => out as *mut u8,
                _ => core::ptr::null_mut(),
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: ptr came from malloc or posix_memalign above.
        unsafe { lazy::sockwrap_free(ptr as *mut libc::c_void) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN && layout.align() <= new_size {
            // SAFETY: ptr came from malloc or posix_memalign, both accepted by realloc.
            unsafe { lazy::sockwrap_realloc(ptr as *mut libc::c_void, new_size) as *mut u8 }
        } else {
            // SAFETY: as GlobalAlloc's default realloc: a new block, copy, free the old.
            unsafe {
                let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
                if !new.is_null() {
                    core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            }
        }
    }
}

// SAFETY: blocks are disjoint ranges of SPACE reserved by compare-and-swap, aligned as
// asked; everything else is libc's.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut cur = NEXT.load(Ordering::Relaxed);
        loop {
            let start = (base() + cur).next_multiple_of(layout.align()) - base();
            let end = match start.checked_add(layout.size()) {
                Some(e) if e <= SIZE => e,
                // SAFETY: layout is the caller's valid layout.
                _ => return unsafe { System.alloc(layout) },
            };
            match NEXT.compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return (base() + start) as *mut u8,
                Err(now) => cur = now,
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if in_arena(ptr) {
            // The most recent block goes back; others stay until exit.
            let start = ptr as usize - base();
            let _ = NEXT.compare_exchange(
                start + layout.size(),
                start,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        } else {
            // SAFETY: ptr came from System.alloc with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !in_arena(ptr) {
            // SAFETY: ptr came from System with this layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let start = ptr as usize - base();
        // The most recent block grows (or shrinks) in place when there is room.
        if start + new_size <= SIZE
            && NEXT
                .compare_exchange(
                    start + layout.size(),
                    start + new_size,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return ptr;
        }
        // SAFETY: new_size is non-zero and, rounded to the alignment, does not overflow
        // (GlobalAlloc::realloc's contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a valid layout.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller size and do not overlap.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: ptr is ours with this layout.
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    // The test binary itself runs on this allocator (the crate's #[global_allocator]), so
    // the harness and these threads both exercise it, past the arena's end into System.

    #[test]
    fn blocks_never_overlap_across_threads_and_growth() {
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut keep: Vec<Vec<u64>> = Vec::new();
                    let mut x = t + 1;
                    for i in 0..3000u64 {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let n = (x >> 33) as usize % 300;
                        let mut v: Vec<u64> = Vec::new();
                        for j in 0..n as u64 {
                            v.push(t << 48 | i << 16 | j); // grows through realloc
                        }
                        if x % 3 == 0 {
                            drop(v); // often the most recent block: given back
                        } else {
                            keep.push(v);
                        }
                    }
                    for v in &keep {
                        for (j, &w) in v.iter().enumerate() {
                            assert_eq!(w >> 48, t, "another thread's data in this block");
                            assert_eq!(w & 0xffff, j as u64, "block overwritten");
                        }
                    }
                    keep.len()
                })
            })
            .collect();
        let kept: usize = threads.into_iter().map(|h| h.join().expect("thread")).sum();
        assert!(kept > 0);
        assert!(super::NEXT.load(core::sync::atomic::Ordering::Relaxed) > 0);
    }

    #[test]
    fn alignment_is_kept() {
        for align in [1usize, 8, 16, 64, 4096] {
            let layout = core::alloc::Layout::from_size_align(24, align).expect("layout");
            // SAFETY: a valid non-zero layout; freed below with the same layout.
            unsafe {
                let p = std::alloc::alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "align {align}");
                std::alloc::dealloc(p, layout);
            }
        }
    }
}
