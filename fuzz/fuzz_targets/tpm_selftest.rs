//! The whole self-test against a hostile TPM: every response is fuzzer
//! bytes. It must end with a report or an error, within its deadline, and
//! never panic.
//!
//! Input: one parameter byte (level, deadline, what happens when the script
//! runs out), then responses, each a big-endian u16 length and that many
//! bytes.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tpm2_selftest::{run_self_test, SelfTestLevel, Transport, TransportError};

/// A TPM that answers from a script.
struct Hostile<'a> {
    replies: Vec<&'a [u8]>,
    next: usize,
    /// Past the script: answer the last reply again (a TPM stuck on one
    /// answer) instead of going away.
    repeat_last: bool,
}

impl Transport for Hostile<'_> {
    fn transact(&mut self, command: &[u8], deadline: Instant) -> Result<Vec<u8>, TransportError> {
        assert!(
            command.len() >= 10,
            "the self-test sent a command without a header"
        );
        // Like the real transports: nothing is sent once the deadline passed.
        if Instant::now() >= deadline {
            return Err(TransportError::Timeout {
                allowed: Duration::ZERO,
            });
        }
        let reply = match self.replies.get(self.next) {
            Some(r) => {
                self.next += 1;
                r
            }
            None if self.repeat_last => match self.replies.last() {
                Some(r) => r,
                None => return Err(TransportError::Gone),
            },
            None => return Err(TransportError::Gone),
        };
        Ok(reply.to_vec())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&params, mut rest)) = data.split_first() else {
        return;
    };
    let mut replies = Vec::new();
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        replies.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    let level = if params & 1 == 0 {
        SelfTestLevel::Quick
    } else {
        SelfTestLevel::Full
    };
    // A few milliseconds: retries back off in real time.
    let timeout = Duration::from_millis(1 + u64::from((params >> 1) & 3));
    let mut tpm = Hostile {
        replies,
        next: 0,
        repeat_last: params & 0x80 != 0,
    };
    let started = Instant::now();
    let result = run_self_test(&mut tpm, level, timeout);
    let took = started.elapsed();
    assert!(
        took < timeout + Duration::from_secs(3),
        "the self-test overran its {timeout:?} deadline: {took:?}"
    );
    match result {
        Ok(report) => {
            assert_eq!(report.level, level);
            assert_eq!(report.family.as_deref(), Some("2.0"));
            assert!((1..=16).contains(&report.random_bytes));
            match level {
                SelfTestLevel::Full => assert_eq!(report.full_test_result, Some(0)),
                _ => assert_eq!(report.full_test_result, None),
            }
            let _ = report.to_string();
        }
        Err(err) => {
            let _ = (err.to_string(), err.response_code());
        }
    }
});
