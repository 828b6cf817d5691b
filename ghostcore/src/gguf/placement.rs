//! Where an opened GGUF file's bytes live: the file's own memory map, or a private copy in
//! anonymous memory backed by transparent huge pages.
//!
//! Decoding one token at one thread streams every weight once (about 100 MB for a 135M
//! Q4_K_M model). From a file-backed map that walk touches one 4 KiB page-cache page after
//! another, so the core misses its TLB every 4 KiB; with 2 MiB pages it misses 512 times less
//! often. Linux maps page-cache files with 4 KiB pages (read-only THP for files is a build
//! option most kernels lack), but anonymous memory gets 2 MiB pages when asked for with
//! `madvise(MADV_HUGEPAGE)` (THP mode `always` or `madvise`). [`Placement::HugePages`] therefore
//! copies the whole file into a 2 MiB-aligned anonymous region advised that way.
//!
//! Cost: one private copy of the file (its page-cache pages stay reclaimable by the kernel; the
//! file map is dropped after the copy), and the copy at load time (tens of ms per 100 MB once
//! the file is cached). Measured gain on a 2-core EPYC VM (SmolLM2-135M and Gemma3-270M
//! Q4_K_M, one thread): 2-4% decode tokens/s. The file map is kept, with the reason in
//! [`WeightResidency::MappedFallback`], where THP is disabled, where the copy would take more
//! than half of the available memory, or where the anonymous region cannot be made.

use memmap2::{Advice, Mmap, MmapMut, MmapOptions};

/// Size and alignment of an x86-64 / aarch64 (4 KiB granule) transparent huge page.
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Where the bytes of a [`super::GgufFile`] opened from a path are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// Read straight from the file's memory map (shared page cache, 4 KiB pages, no copy).
    Mapped,
    /// Copied into private anonymous memory advised for transparent huge pages, falling back
    /// to the file map when that is not possible. Faster decode (fewer TLB misses), one more
    /// copy of the file in memory.
    #[default]
    HugePages,
}

/// What a [`Placement`] request produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightResidency {
    /// The file's memory map, as asked.
    Mapped,
    /// A private anonymous copy, advised for huge pages.
    HugePageCopy,
    /// Huge pages were asked for but the file map is used; the reason.
    MappedFallback(String),
    /// An in-memory image handed to [`super::GgufFile::from_bytes`].
    Buffer,
}

/// Why a huge-page copy of `len` bytes should not be made on this machine, if it should not:
/// transparent huge pages are off (`never`), or the copy would take more than half of the
/// memory the kernel reports available (the file map then costs nothing extra).
pub(crate) fn reason_not_to_copy(len: usize) -> Option<String> {
    if let Ok(mode) = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled") {
        if mode.contains("[never]") {
            return Some("transparent huge pages are disabled".into());
        }
    }
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| mem_available_bytes(&m));
    match available {
        Some(avail) if (len as u64).saturating_mul(2) > avail => Some(format!(
            "a {} MiB copy would take more than half of the {} MiB available",
            len >> 20,
            avail >> 20
        )),
        _ => None,
    }
}

/// `MemAvailable` of `/proc/meminfo` text, in bytes.
fn mem_available_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line
        .trim_start_matches("MemAvailable:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// A 2 MiB-aligned, read-only anonymous copy of some bytes, advised for huge pages.
pub(crate) struct HugePageCopy {
    map: Mmap,
    start: usize,
    len: usize,
}

impl HugePageCopy {
    /// Copies `src` into a fresh anonymous region whose first byte is 2 MiB-aligned.
    pub(crate) fn new(src: &[u8]) -> std::io::Result<HugePageCopy> {
        let len = src.len();
        // Over-allocate by one huge page so an aligned start always fits, whatever address the
        // kernel picks; the untouched slack is never faulted in and costs no memory.
        let total = len
            .checked_add(2 * HUGE_PAGE_BYTES)
            .ok_or_else(|| std::io::Error::other("file too large to copy"))?
            / HUGE_PAGE_BYTES
            * HUGE_PAGE_BYTES;
        let mut map: MmapMut = MmapOptions::new().len(total).map_anon()?;
        // Advice must come before the first touch: the fault handler picks the page size.
        map.advise(Advice::HugePage)?;
        let start = map.as_ptr().align_offset(HUGE_PAGE_BYTES);
        if start + len > total {
            return Err(std::io::Error::other(
                "aligned copy does not fit its region",
            ));
        }
        map[start..start + len].copy_from_slice(src);
        let map = map.make_read_only()?;
        Ok(HugePageCopy { map, start, len })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }
}

/// Bytes of the mapping that contains `addr` backed by anonymous huge pages, from
/// `/proc/self/smaps` (`AnonHugePages`). `None` when that file is unreadable (not Linux) or no
/// mapping contains `addr`.
pub fn anon_huge_page_bytes(addr: *const u8) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    anon_huge_page_bytes_in(&smaps, addr as usize)
}

/// Parses smaps text: finds the mapping whose `start-end` header line contains `addr`, returns
/// its `AnonHugePages` in bytes.
fn anon_huge_page_bytes_in(smaps: &str, addr: usize) -> Option<u64> {
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = lo <= addr && addr < hi;
                    continue;
                }
            }
        }
        if inside {
            if let Some(rest) = line.strip_prefix("AnonHugePages:") {
                let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
                return Some(kib * 1024);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_is_aligned_and_identical() {
        let src: Vec<u8> = (0..3 * HUGE_PAGE_BYTES + 12345)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let copy = HugePageCopy::new(&src).expect("anonymous map");
        assert_eq!(copy.bytes(), &src[..]);
        assert_eq!(copy.bytes().as_ptr() as usize % HUGE_PAGE_BYTES, 0);
    }

    #[test]
    fn empty_copy() {
        let copy = HugePageCopy::new(&[]).expect("anonymous map");
        assert!(copy.bytes().is_empty());
    }

    #[test]
    fn meminfo_parsing() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   12345678 kB\n";
        assert_eq!(mem_available_bytes(text), Some(12345678 * 1024));
        assert_eq!(mem_available_bytes("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn smaps_parsing_finds_the_containing_mapping() {
        let text = "\
7f0000000000-7f0000200000 rw-p 00000000 00:00 0
Size:               2048 kB
AnonHugePages:         0 kB
7f0000400000-7f0000a00000 r--p 00000000 00:00 0
Size:               6144 kB
AnonHugePages:      4096 kB
VmFlags: rd mr mw me ac hg
";
        assert_eq!(anon_huge_page_bytes_in(text, 0x7f0000100000), Some(0));
        assert_eq!(
            anon_huge_page_bytes_in(text, 0x7f0000400000),
            Some(4096 * 1024)
        );
        assert_eq!(anon_huge_page_bytes_in(text, 0x7f0000300000), None);
        assert_eq!(anon_huge_page_bytes_in(text, 0x7f0000a00000), None);
    }
}
