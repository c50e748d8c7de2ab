//! Giving the C heap back to the system after large messages.
//!
//! glibc keeps freed memory for reuse: a 25 MB buffer freed in one of its arenas stays in
//! the process, and after its first large `free` it raises the size from which it maps
//! buffers on their own (the "dynamic mmap threshold", up to 32 MiB), so from then on every
//! message buffer comes from an arena and is kept after the message is done. Measured with
//! `bench/memory.py` (ten concurrent 25 MiB messages) the relay held most of its peak for
//! good. Two things undo that: a fixed mmap threshold at start (buffers of 1 MiB and more
//! are mapped on their own and unmapped when freed, and the threshold no longer moves),
//! and `malloc_trim` after a large message, which returns the free tops and free pages of
//! every arena. Other allocators (musl, macOS) need neither; there these are no-ops.

/// Messages at least this large are followed by a trim.
pub const TRIM_AFTER_BYTES: usize = 1024 * 1024;

/// Sets the allocator up for large, short-lived message buffers; call once at start.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; any value is accepted or refused by
    // its return code, which here changes nothing if refused.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, TRIM_AFTER_BYTES as libc::c_int);
    }
}

/// Returns the heap's free memory to the system (after a large message is done). Takes a
/// few milliseconds with a large heap: call it off the async runtime.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
