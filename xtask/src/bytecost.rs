//! What copying and clearing bytes costs, measured the same way on the host
//! and in the bench's guest. The kernel copies to and from user space with
//! `rep movsb` and clears new pages with `rep stosb` (the guest CPU has
//! ERMS), so a tool's cost per packet grows with the bytes it moves: the
//! CLI's read of each record, its write of each line, the page cache's
//! zeroing of each new tmpfs page. QEMU's TCG runs those instructions one
//! byte per emulated step, so under it a byte weighs far more against the
//! rest of the work than on a real CPU; both numbers side by side show by
//! how much.

use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Nanoseconds to copy and to clear 1 KiB, 4 KiB at a time (a page).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ByteCost {
    pub copy_ns_per_kib: f64,
    pub clear_ns_per_kib: f64,
}

const PAGE: usize = 4096;

/// `rep movsb` of `from` into `to`, as copy_to_user does.
fn rep_movsb(to: &mut [u8; PAGE], from: &[u8; PAGE]) {
    // SAFETY: copies PAGE bytes between two distinct buffers of PAGE bytes;
    // the direction flag is clear, as the ABI guarantees.
    unsafe {
        std::arch::asm!(
            "rep movsb",
            inout("rcx") PAGE => _,
            inout("rdi") to.as_mut_ptr() => _,
            inout("rsi") from.as_ptr() => _,
            options(nostack, preserves_flags)
        );
    }
}

/// `rep stosb` of zeros over `page`, as clear_page_erms does.
fn rep_stosb(page: &mut [u8; PAGE]) {
    // SAFETY: writes PAGE bytes into a buffer of PAGE bytes; the direction
    // flag is clear, as the ABI guarantees.
    unsafe {
        std::arch::asm!(
            "rep stosb",
            inout("rcx") PAGE => _,
            inout("rdi") page.as_mut_ptr() => _,
            in("al") 0u8,
            options(nostack, preserves_flags)
        );
    }
}

/// Nanoseconds per KiB of `op` on one page: the best of several timed
/// batches, so a batch the host interrupted does not count.
fn ns_per_kib(mut op: impl FnMut()) -> f64 {
    const BATCHES: usize = 7;
    const BATCH: Duration = Duration::from_millis(20);
    (0..BATCHES)
        .map(|_| {
            let start = Instant::now();
            let mut pages = 0u32;
            while start.elapsed() < BATCH {
                for _ in 0..16 {
                    op();
                }
                pages += 16;
            }
            start.elapsed().as_nanos() as f64 / f64::from(pages) / (PAGE / 1024) as f64
        })
        .fold(f64::INFINITY, f64::min)
}

pub fn measure() -> ByteCost {
    let from = Box::new([0x5a_u8; PAGE]);
    let mut to = Box::new([0_u8; PAGE]);
    ByteCost {
        copy_ns_per_kib: ns_per_kib(|| rep_movsb(black_box(&mut to), black_box(&from))),
        clear_ns_per_kib: ns_per_kib(|| rep_stosb(black_box(&mut to))),
    }
}

/// One line comparing the guest's costs with the host's.
pub fn describe(guest: &ByteCost, host: &ByteCost) -> String {
    let costs = [
        (
            "copying (rep movsb)",
            guest.copy_ns_per_kib,
            host.copy_ns_per_kib,
        ),
        (
            "clearing (rep stosb)",
            guest.clear_ns_per_kib,
            host.clear_ns_per_kib,
        ),
    ];
    let parts: Vec<String> = costs
        .iter()
        .map(|(what, guest, host)| {
            format!(
                "{what} 1 KiB: {guest:.0} ns in the guest, {host:.1} ns on the host ({:.0}×)",
                guest / host
            )
        })
        .collect();
    format!("bytes: {}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copies_do_what_they_time() {
        let from = [7_u8; PAGE];
        let mut to = [1_u8; PAGE];
        rep_movsb(&mut to, &from);
        assert_eq!(to, from);
        rep_stosb(&mut to);
        assert_eq!(to, [0_u8; PAGE]);
    }

    #[test]
    fn the_line_shows_both_and_their_ratio() {
        let guest = ByteCost {
            copy_ns_per_kib: 1400.0,
            clear_ns_per_kib: 1000.0,
        };
        let host = ByteCost {
            copy_ns_per_kib: 7.0,
            clear_ns_per_kib: 8.0,
        };
        assert_eq!(
            describe(&guest, &host),
            "bytes: copying (rep movsb) 1 KiB: 1400 ns in the guest, 7.0 ns on the host (200×); \
             clearing (rep stosb) 1 KiB: 1000 ns in the guest, 8.0 ns on the host (125×)"
        );
    }
}
