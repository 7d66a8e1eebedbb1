//! Crash-test failpoints: with `SIGNALMAN_FAILPOINT=<name>` the process SIGKILLs itself when it
//! reaches that point of the exactly-once protocol, exactly as an OOM kill or a node loss would
//! stop it. Compiled only with the `failpoints` feature, which only the tests turn on; in every
//! other build [`hit`] is an empty function.

/// After the claim is written, before the send.
pub const AFTER_CLAIM: &str = "after-claim";
/// After the send returned, before its outcome is recorded.
pub const AFTER_SEND: &str = "after-send";

#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("SIGNALMAN_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        tracing::warn!(failpoint = name, "failpoint reached: killing this process");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGKILL);
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
