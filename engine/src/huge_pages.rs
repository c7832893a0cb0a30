//! 2 MiB pages for the weights that decode streams once per token.
//!
//! With 4 KiB pages every 4 KiB of a weight row costs a TLB entry, a page walk (two-level
//! under a hypervisor) and a stop of the hardware prefetcher at the page's end. Decode of
//! gpt-oss-20b reads about 2.6 GB per token, in about 650,000 such pages. Measured with
//! `ossa bench` on a 2-vCPU AMD EPYC VM (Linux 6.18, ext4, page cache dropped before each
//! run): decode 5.68/5.92/6.46 tok/s with 4 KiB pages against 6.14/6.54/6.27 with the
//! checkpoint in 2 MiB folios, alternating runs (see issue 17's notes).
//!
//! The same runs with the converted q8 weights (anonymous memory) also in 2 MiB pages were
//! no faster, within this VM's noise, so those keep 4 KiB pages; the bandwidth yardstick asks
//! for 2 MiB pages, as decode's weights now have them.
//!
//! Both calls are hints: where the kernel cannot (no transparent huge pages, a filesystem
//! without large folios, pages already cached in small folios by an earlier reader) nothing
//! changes but the speed.

/// Asks for the mapped file's pages to enter the page cache as 2 MiB folios, each mapped by one
/// page-table entry. Only pages read after the call: a file already cached keeps its folios.
pub(crate) fn advise_map(map: &memmap2::Mmap) {
    #[cfg(target_os = "linux")]
    if let Err(e) = map.advise(memmap2::Advice::HugePage) {
        tracing::debug!(error = %e, "madvise(HUGEPAGE) on the checkpoint failed; 4 KiB pages");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = map;
}

/// Asks for the whole 2 MiB pages inside `data`, a fresh allocation not yet written, to be
/// backed by 2 MiB pages when first touched (glibc does not ask for them, and the common
/// `transparent_hugepage` setting, `madvise`, gives them only to those who ask).
pub(crate) fn advise_fresh<T>(data: &[T]) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = data.as_ptr() as usize;
        let end = start + std::mem::size_of_val(data);
        let first = start.next_multiple_of(PAGE);
        if end <= first + PAGE {
            return;
        }
        let len = (end - first) / PAGE * PAGE;
        // SAFETY: [first, first + len) lies inside `data`'s allocation, whole pages of it;
        // MADV_HUGEPAGE changes only how the pages are backed, never their contents.
        let rc = unsafe { libc::madvise(first as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "madvise(HUGEPAGE) on converted weights failed; 4 KiB pages"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = data;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The kernel's transparent huge page mode: `always`, `madvise` or `never`.
    fn thp_mode() -> Option<String> {
        let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
        let start = text.find('[')? + 1;
        let end = text[start..].find(']')? + start;
        Some(text[start..end].to_string())
    }

    /// `AnonHugePages` (kB) of the mapping holding `addr`, from /proc/self/smaps.
    fn anon_huge_kb(addr: usize) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = first.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
            } else if inside && let Some(rest) = line.strip_prefix("AnonHugePages:") {
                return rest.trim().trim_end_matches("kB").trim().parse().ok();
            }
        }
        None
    }

    /// A fresh 16 MiB buffer advised and then written is backed by 2 MiB pages wherever the
    /// kernel gives them to those who ask; its contents are what was written; a buffer
    /// smaller than a page and one not page-aligned are left alone without error.
    #[test]
    fn fresh_buffers_get_huge_pages_and_keep_their_contents() {
        let mut buf = vec![0u64; 2 << 20];
        advise_fresh(&buf);
        for (i, w) in buf.iter_mut().enumerate() {
            *w = i as u64 * 3;
        }
        assert!(buf.iter().enumerate().all(|(i, &w)| w == i as u64 * 3));
        let huge = anon_huge_kb(buf.as_ptr() as usize + buf.len() * 4);
        match thp_mode().as_deref() {
            Some("always" | "madvise") => {
                let kb = huge.expect("the buffer's mapping is in /proc/self/smaps");
                assert!(
                    kb >= 2048,
                    "no 2 MiB page in a 16 MiB advised buffer: {kb} kB"
                );
            }
            mode => eprintln!("transparent huge pages {mode:?}: only the contents checked"),
        }
        let small = [1u8; 100];
        advise_fresh(&small);
        advise_fresh(&buf[1..7]);
        assert_eq!(small, [1u8; 100]);
    }
}
