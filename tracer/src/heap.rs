//! Giving the heap memory sockerr freed back to the kernel, where the allocator keeps it.
//!
//! glibc's malloc keeps freed memory in the arena of the thread that used it, and returns
//! it only from the top of a heap (and past a threshold that grows with the largest
//! blocks freed so far). sockerr frees large transient blocks on short-lived threads:
//! aya's parse of the kernel's BTF at start-up (~17 MiB at its peak), the sock_diag
//! rounds of the namespace threads. Measured on the bench's busy node (glibc build), a
//! trim gave back 5.5 MiB of a daemon at rest (20.0 -> 14.5 MiB) and 6.3 MiB after the
//! failures (28.5 -> 22.2 MiB). musl's malloc, in the shipped static binary, unmaps
//! freed memory itself: there is nothing to do.

use std::time::Duration;

/// How often [`release_every`] trims: a trim walks every arena under its lock (1.3 to
/// 6.5 ms each on the busy node, on a runtime worker), so not on every tick, but often
/// enough that a burst's garbage does not stay for long.
pub const RELEASE_PERIOD: Duration = Duration::from_secs(10);

/// Returns the free pages of every malloc arena to the kernel (glibc); nothing elsewhere.
pub fn release_freed() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointer; it walks the allocator's own free lists,
    // taking each arena's lock, and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// [`release_freed`] now (the first tick of the interval: start-up's garbage), then every
/// [`RELEASE_PERIOD`]. Returns at once where the allocator gives memory back by itself.
pub async fn release_every(period: Duration) {
    if !cfg!(target_env = "gnu") {
        return;
    }
    let mut ticker = tokio::time::interval(period);
    loop {
        ticker.tick().await;
        let started = std::time::Instant::now();
        release_freed();
        tracing::trace!(took_us = started.elapsed().as_micros() as u64, "freed heap returned to the kernel");
    }
}

#[cfg(all(test, target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|line| line.starts_with("RssAnon:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn memory_freed_under_a_block_still_in_use_goes_back_to_the_kernel() {
        const BLOCKS: usize = 64 * 1024;
        // 1 KiB each.
        const FREED_KIB: u64 = BLOCKS as u64;
        // A thread of its own, as the namespace threads: its arena, not the main heap.
        let kept = std::thread::spawn(|| {
            // Small blocks (under the mmap threshold) come from the arena; the last one
            // stays, so the 64 MiB freed below it is no free top that glibc would trim.
            let mut blocks: Vec<Box<[u8; 1024]>> = (0..BLOCKS).map(|_| Box::new([1u8; 1024])).collect();
            let last = blocks.pop().unwrap();
            drop(blocks);
            last
        })
        .join()
        .unwrap();
        let before = rss_anon_kib();
        release_freed();
        let after = rss_anon_kib();
        // Other tests run alongside and allocate too: half of it is enough to tell.
        assert!(
            before.saturating_sub(after) >= FREED_KIB / 2,
            "RssAnon {before} KiB -> {after} KiB after freeing {FREED_KIB} KiB"
        );
        assert_eq!(kept[0], 1);
    }
}
