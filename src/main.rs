//! The `safe-reload` binary: parse flags, run, exit with the status from the exit table.

fn main() {
    // Before any thread or child exists: a descriptor the caller leaked reaches no child.
    safe_reload::fds::close_inherited_on_exec();
    keep_large_buffers_out_of_the_heap();
    let code = safe_reload::run::main(std::env::args_os());
    #[allow(clippy::exit)]
    std::process::exit(code)
}

/// glibc raises its mmap threshold each time a large block is freed, up to 32 MiB, so after the
/// first grown-and-dropped vector every later large buffer lands in the brk heap, where freeing
/// it leaves a hole the process keeps. Parsing a 10,000-server configuration grows many such
/// buffers: fixing the threshold at glibc's default start value keeps them in their own
/// mappings, returned on free, which lowers peak memory by about a fifth on that size.
fn keep_large_buffers_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists, with a documented parameter and an in-range value.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
