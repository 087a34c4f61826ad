//! A transport that replays canned responses, for testing the self-test
//! logic without a TPM; and builders for well-formed responses.

use std::collections::VecDeque;
use std::time::Instant;

use super::proto::TPM_CAP_TPM_PROPERTIES;
use super::transport::{time_left, Transport, TransportError};

pub(crate) enum Reply {
    /// Answer the next command with these bytes.
    Bytes(Vec<u8>),
    /// Fail the next command.
    Fail(TransportError),
    /// Answer this and every later command with these bytes.
    Always(Vec<u8>),
}

pub(crate) struct ScriptedTransport {
    replies: VecDeque<Reply>,
    /// Every command received, in order.
    pub sent: Vec<Vec<u8>>,
}

impl ScriptedTransport {
    pub fn new(replies: impl IntoIterator<Item = Reply>) -> Self {
        Self {
            replies: replies.into_iter().collect(),
            sent: Vec::new(),
        }
    }
}

impl Transport for ScriptedTransport {
    fn transact(&mut self, command: &[u8], deadline: Instant) -> Result<Vec<u8>, TransportError> {
        self.sent.push(command.to_vec());
        // Like the real transports: nothing is sent once the deadline passed.
        if time_left(deadline).is_none() {
            return Err(TransportError::Timeout {
                allowed: Default::default(),
            });
        }
        match self.replies.front() {
            Some(Reply::Always(bytes)) => Ok(bytes.clone()),
            Some(_) => match self.replies.pop_front() {
                Some(Reply::Bytes(bytes)) => Ok(bytes),
                Some(Reply::Fail(err)) => Err(err),
                _ => unreachable!("front() was Bytes or Fail"),
            },
            None => panic!("unexpected command {command:02x?}: the script is over"),
        }
    }
}

/// A no-sessions response with the given code and parameters.
pub(crate) fn response(code: u32, parameters: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0x8001u16.to_be_bytes());
    out.extend_from_slice(&((10 + parameters.len()) as u32).to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(parameters);
    out
}

/// A header-only response carrying `code`.
pub(crate) fn rc(code: u32) -> Vec<u8> {
    response(code, &[])
}

/// A successful GetCapability(TPM_PROPERTIES) response.
pub(crate) fn properties(more_data: bool, pairs: &[(u32, u32)]) -> Vec<u8> {
    let mut parameters = vec![u8::from(more_data)];
    parameters.extend_from_slice(&TPM_CAP_TPM_PROPERTIES.to_be_bytes());
    parameters.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
    for (property, value) in pairs {
        parameters.extend_from_slice(&property.to_be_bytes());
        parameters.extend_from_slice(&value.to_be_bytes());
    }
    response(0, &parameters)
}

/// A successful GetRandom response with `n` bytes.
pub(crate) fn random(n: u16) -> Vec<u8> {
    let mut parameters = n.to_be_bytes().to_vec();
    parameters.extend((0..n).map(|i| i as u8 ^ 0x5A));
    response(0, &parameters)
}

/// A successful GetTestResult response reporting `test_result`.
pub(crate) fn test_result(test_result: u32) -> Vec<u8> {
    let mut parameters = vec![0, 2, 0xDE, 0xAD];
    parameters.extend_from_slice(&test_result.to_be_bytes());
    response(0, &parameters)
}
