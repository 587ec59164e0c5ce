//! The `sluice` binary: sets up logging and hands over to the library's CLI.

// Batches are megabyte-sized buffers allocated and freed every batch; glibc's allocator
// returns such blocks to the kernel each time (mmap/munmap) and pays page faults to get them
// back. mimalloc keeps them (measured: see `sluice bench plugins`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::clock::mark_process_start();
    sluice::cli::main()
}
