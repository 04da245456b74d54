//! SIGINT and SIGTERM. Before the reload an interrupt stops the run with nothing changed (exit
//! 130); once nginx has been signalled, stopping halfway would leave an unverified config live,
//! so the run finishes verification or rollback and the handler only says what is in progress.
//!
//! The handler does nothing but async-signal-safe work: an atomic increment and one `write(2)`
//! of a fixed message chosen by the current phase.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

static COUNT: AtomicUsize = AtomicUsize::new(0);
static PHASE: AtomicU8 = AtomicU8::new(Phase::Idle as u8);

/// What the run is doing, for the message a second Ctrl-C prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Nothing changed yet: an interrupt stops the run.
    Idle = 0,
    /// nginx was signalled; the reload is being proven and verified.
    Verifying = 1,
    /// The last good configuration is being restored.
    RollingBack = 2,
}

const MSG_VERIFYING: &[u8] = b"\nsafe-reload: nginx is being reloaded; finishing verification (and rollback if it fails) before exiting. Please wait.\n";
const MSG_ROLLING_BACK: &[u8] = b"\nsafe-reload: restoring the last good configuration; stopping now would leave nginx half-restored. Please wait.\n";

extern "C" fn on_signal(_sig: libc::c_int) {
    COUNT.fetch_add(1, Ordering::SeqCst);
    let msg = match PHASE.load(Ordering::SeqCst) {
        1 => MSG_VERIFYING,
        2 => MSG_ROLLING_BACK,
        _ => return,
    };
    // SAFETY: write(2) is async-signal-safe; the buffer is a static byte string.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
    }
}

/// Install the handlers for SIGINT and SIGTERM. Child processes run in our process group get
/// the terminal's SIGINT too; callers check [`interrupted`] after a child fails.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a plain handler and SA_RESTART is a valid argument;
        // the handler only touches atomics and calls write(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Whether SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    COUNT.load(Ordering::SeqCst) > 0
}

/// Declare the current phase.
pub fn set_phase(phase: Phase) {
    PHASE.store(phase as u8, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_counted() {
        install();
        set_phase(Phase::Idle);
        // SAFETY: raising a signal whose handler we just installed.
        unsafe {
            libc::raise(libc::SIGTERM);
        }
        assert!(interrupted());
    }
}
