//! Whether a TPM works: the quick self-test of `tpm2-selftest`
//! (GetCapability for family, manufacturer and firmware, then GetRandom),
//! run on each advertised TPM every health interval.
//!
//! Each TPM has its own watcher, and each self-test runs on a blocking
//! thread bounded by the policy's self-test timeout, so a TPM that hangs
//! (a stopped software TPM, a wedged chip) is reported unhealthy after that
//! timeout without delaying the others. A hung check is never stacked: the
//! next one starts after it returned. So a TPM that stops answering is
//! reported within one interval plus the timeout (10 s + 5 s by default).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tpm2_selftest::{self as tpm, SelfTestLevel};

/// What a passing self-test found: what the node's labels say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmInfo {
    /// "2.0"
    pub family: String,
    /// "IBM", "INTC", "STM"
    pub manufacturer: String,
    /// "a.b.c.d"
    pub firmware: String,
}

/// Proves one TPM. A trait so that tests can script a TPM's answers.
pub trait Checker: Send + Sync + 'static {
    /// The TPM at `device` (as this process sees it), within `timeout`.
    fn check(&self, device: &Path, timeout: Duration) -> Result<TpmInfo, String>;
}

/// The real one: the quick self-test on the device node.
pub struct SelfTest;

impl Checker for SelfTest {
    fn check(&self, device: &Path, timeout: Duration) -> Result<TpmInfo, String> {
        let report = tpm::self_test_device(device, SelfTestLevel::Quick, timeout)
            .map_err(|e| format!("self-test (quick) failed: {:#}", anyhow::Error::from(e)))?;
        let unknown = || "unknown".to_owned();
        Ok(TpmInfo {
            family: report.family.unwrap_or_else(unknown),
            manufacturer: report.manufacturer.unwrap_or_else(unknown),
            firmware: report.firmware.unwrap_or_else(unknown),
        })
    }
}

/// One self-test's outcome.
#[derive(Debug)]
pub struct Report {
    pub name: String,
    pub outcome: Result<TpmInfo, String>,
}

/// Extra time a blocked open or close gets beyond the self-test's own
/// deadline before the TPM counts as hung.
const GRACE: Duration = Duration::from_millis(500);

/// Checks the TPM `name` at `device` now and then every `interval`, for as
/// long as the receiver of `reports` lives (or the task is aborted).
pub async fn watch(
    name: String,
    device: PathBuf,
    checker: Arc<dyn Checker>,
    interval: Duration,
    timeout: Duration,
    reports: mpsc::Sender<Report>,
) {
    loop {
        let (c, d) = (checker.clone(), device.clone());
        let mut job = tokio::task::spawn_blocking(move || c.check(&d, timeout));
        let outcome = match tokio::time::timeout(timeout + GRACE, &mut job).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => Err(format!("the self-test did not finish: {e}")),
            Err(_) => Err(format!(
                "no answer within {} ms (the self-test is still blocked in the kernel)",
                timeout.as_millis()
            )),
        };
        let hung = !job.is_finished();
        let report = Report {
            name: name.clone(),
            outcome,
        };
        if reports.send(report).await.is_err() {
            return;
        }
        if hung {
            // One check at a time: wait for the stuck one to come back.
            let _ = job.await;
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Passes on odd calls, fails on even ones.
    struct Alternating(AtomicU32);

    impl Checker for Alternating {
        fn check(&self, _: &Path, _: Duration) -> Result<TpmInfo, String> {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            if n % 2 == 0 {
                return Err(format!("failure {n}"));
            }
            Ok(info())
        }
    }

    fn info() -> TpmInfo {
        TpmInfo {
            family: "2.0".into(),
            manufacturer: "IBM".into(),
            firmware: "1.2.3.4".into(),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reports_every_check_in_turn() {
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(watch(
            "tpmrm0".into(),
            "/nonexistent".into(),
            Arc::new(Alternating(AtomicU32::new(0))),
            Duration::from_millis(10),
            Duration::from_millis(100),
            tx,
        ));
        let first = rx.recv().await.unwrap();
        assert_eq!(first.name, "tpmrm0");
        assert_eq!(first.outcome, Ok(info()));
        assert_eq!(rx.recv().await.unwrap().outcome, Err("failure 2".into()));
        assert_eq!(rx.recv().await.unwrap().outcome, Ok(info()));
        task.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_hung_check_is_reported_after_the_timeout_and_not_stacked() {
        struct Hangs(AtomicU32);
        impl Checker for Hangs {
            fn check(&self, _: &Path, _: Duration) -> Result<TpmInfo, String> {
                if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::thread::sleep(Duration::from_millis(1500));
                }
                Ok(info())
            }
        }
        let checker = Arc::new(Hangs(AtomicU32::new(0)));
        let (tx, mut rx) = mpsc::channel(4);
        let started = std::time::Instant::now();
        let task = tokio::spawn(watch(
            "tpmrm1".into(),
            "/nonexistent".into(),
            checker.clone(),
            Duration::from_millis(10),
            Duration::from_millis(100),
            tx,
        ));
        let hung = rx.recv().await.unwrap();
        let took = started.elapsed();
        let err = hung.outcome.unwrap_err();
        assert!(err.contains("no answer within 100 ms"), "{err}");
        assert!(
            took < Duration::from_millis(1200),
            "reported after {took:?}"
        );
        // The next check starts only once the hung one returned.
        assert_eq!(rx.recv().await.unwrap().outcome, Ok(info()));
        assert!(started.elapsed() >= Duration::from_millis(1500));
        assert_eq!(checker.0.load(Ordering::SeqCst), 2);
        task.abort();
    }

    #[test]
    fn the_real_check_names_a_missing_device() {
        let err = SelfTest
            .check(Path::new("/nonexistent/tpmrm0"), Duration::from_millis(100))
            .unwrap_err();
        assert!(
            err.contains("self-test") && err.contains("/nonexistent/tpmrm0"),
            "{err}"
        );
    }
}
