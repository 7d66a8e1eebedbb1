//! Crash-test failpoints: with `SIGNALMAN_FAILPOINT=<name>` the process SIGKILLs itself when it
//! reaches that point of the exactly-once protocol, exactly as an OOM kill or a node loss would
//! stop it; with `<name>:pause=<seconds>` it stalls there once, as a paused process would. Compiled only with the `failpoints` feature, which only the tests turn on; in every
//! other build [`hit`] is an empty function.

/// After the claim is written, before the send.
pub const AFTER_CLAIM: &str = "after-claim";
/// After the send returned, before its outcome is recorded.
pub const AFTER_SEND: &str = "after-send";

#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let armed = ARMED.get_or_init(|| std::env::var("SIGNALMAN_FAILPOINT").ok());
    let Some(armed) = armed.as_deref() else {
        return;
    };
    // `<name>:pause=<seconds>`: the first time, this thread stops for that long, as a process
    // stalls (a long GC-like pause, a frozen VM), then goes on.
    if let Some(seconds) = armed
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix(":pause="))
        .and_then(|s| s.parse::<u64>().ok())
    {
        if !PAUSED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tracing::warn!(failpoint = name, seconds, "failpoint reached: pausing");
            std::thread::sleep(std::time::Duration::from_secs(seconds));
        }
        return;
    }
    if armed == name {
        tracing::warn!(failpoint = name, "failpoint reached: killing this process");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGKILL);
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
