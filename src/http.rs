//! HTTP response bodies read with a bound: every body the worker fetches goes through
//! [`read_bounded`].
//!
//! A server (or a proxy in front of it) that answers 200 and then streams without end must not
//! take the process's memory: the body is refused at once when its `Content-Length` is over the
//! limit, and otherwise read chunk by chunk and given up as soon as it grows past the limit. So no
//! body is ever held beyond `limit` bytes, whatever the other side sends; how long it may trickle
//! is the client's request timeout's business.

use std::fmt;

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The body is (or says it is) longer than the limit.
    TooLong {
        /// The limit, in bytes.
        limit: usize,
        /// The `Content-Length` the server declared, when that is how it was caught.
        declared: Option<u64>,
    },
    /// The connection failed or timed out while the body was read.
    Transport(reqwest::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLong {
                limit,
                declared: Some(n),
            } => write!(
                f,
                "the body is longer than the limit of {limit} bytes (Content-Length {n}); not read"
            ),
            BodyError::TooLong {
                limit,
                declared: None,
            } => write!(
                f,
                "the body grew past the limit of {limit} bytes; reading stopped there"
            ),
            BodyError::Transport(e) => write!(f, "{e}"),
        }
    }
}

/// Reads `response`'s body, refusing it once it is longer than `limit` bytes.
pub(crate) async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let declared = response.content_length();
    if let Some(n) = declared.filter(|&n| n > limit as u64) {
        return Err(BodyError::TooLong {
            limit,
            declared: Some(n),
        });
    }
    // The declared length sizes the buffer only up to the limit; without one, a small start.
    let start = declared.map_or(INITIAL_CAPACITY, |n| n as usize);
    let mut body = Vec::with_capacity(start.min(limit));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLong {
                limit,
                declared: None,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The buffer a body of unknown length starts with.
const INITIAL_CAPACITY: usize = 16 * 1024;
