//! Hands the memory ONNX Runtime freed while building sessions back to the operating system.
//!
//! ONNX Runtime allocates through the C library's `malloc`, not through Rust's global allocator.
//! Building a session (graph optimisation, constant folding, the memory planner) allocates and
//! frees hundreds of megabytes for a paper-sized model, and glibc keeps what was freed in the
//! arena of the thread that freed it, one arena per thread that built a session. Nothing reuses
//! it afterwards, since inference draws on ONNX Runtime's own arena, so a paper-sized model's
//! resident memory after start-up was mostly garbage (docs/performance.md, "Memory").

/// Returns the free pages of every glibc malloc arena to the kernel. Cheap (a walk over the free
/// lists); called after each session build (`ort::build_session`); once the sessions are warm
/// there is nothing left to return. On other C libraries it does nothing.
pub fn release_freed_memory() {
    // SAFETY: malloc_trim takes no pointers and is thread-safe (it locks each arena).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_bytes() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let kib: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// The situation after a session build: a thread's arena full of freed blocks, pinned by one
    /// block still in use above them, so glibc does not shrink the heap by itself.
    #[test]
    fn returns_freed_blocks_of_a_threads_arena() {
        const BLOCK: usize = 64 * 1024; // below glibc's mmap threshold: served from the arena
        const BLOCKS: usize = 4096; // 256 MiB
        let (before_trim, after_trim) = std::thread::spawn(|| unsafe {
            let blocks: Vec<*mut u8> = (0..BLOCKS)
                .map(|_| {
                    let p = libc::malloc(BLOCK) as *mut u8;
                    assert!(!p.is_null());
                    std::ptr::write_bytes(p, 1, BLOCK);
                    p
                })
                .collect();
            let pin = blocks[BLOCKS - 1];
            for &p in &blocks[..BLOCKS - 1] {
                libc::free(p as *mut libc::c_void);
            }
            let before = rss_bytes();
            release_freed_memory();
            let after = rss_bytes();
            libc::free(pin as *mut libc::c_void);
            (before, after)
        })
        .join()
        .expect("thread");
        assert!(
            before_trim >= after_trim + 128 * 1024 * 1024,
            "RSS {before_trim} -> {after_trim}: freed blocks not returned"
        );
    }
}
