//! The `sluice` binary: sets up logging and hands over to the library's CLI.

// Batches are megabyte-sized buffers allocated and freed every batch; glibc's allocator
// returns such blocks to the kernel each time (mmap/munmap) and pays page faults to get them
// back. mimalloc keeps them (measured: see `sluice bench plugins`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tune_allocator();
    sluice::clock::mark_process_start();
    sluice::cli::main()
}

/// `purge_delay` in mimalloc.h's `mi_option_e` (the same index in its v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Gives freed heap memory back to the kernel 10 ms after it is freed (mimalloc v2's default;
/// v3's is 1 s), unless `MIMALLOC_PURGE_DELAY` says otherwise. Blocks are allocated and freed
/// at gigabytes a second, so a second of freed blocks held back was most of the process's
/// resident memory. Together with the heap built without transparent huge pages (the
/// `no_thp` feature: a 2 MiB huge page stays resident while any of its bytes is in use, and
/// the kernel here backs any `madvise`d heap with them), peak RSS of upper-case over files
/// at full speed fell from about 205 to 78 MiB, with throughput unchanged (bench/README.md).
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, which it reads atomically; no memory is
        // touched.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
    }
}
