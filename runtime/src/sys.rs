//! The runtime's only unsafe code: calls into libc that have no safe wrapper.
#![allow(unsafe_code)]

/// Gives freed heap memory back to the kernel. A pull allocates buffers on several threads; without
/// this, glibc keeps those pages and the idle daemon stays several megabytes larger than it needs.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks glibc's own allocator state and takes its locks; it has no
    // preconditions and touches no memory the caller owns.
    unsafe {
        libc::malloc_trim(0);
    }
}
