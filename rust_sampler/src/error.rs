//! The one error type of the plain-Rust modules; lib.rs maps it to Python's ValueError.

use std::fmt;

/// A caller mistake (bad argument, out-of-range value); the message names the argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplerError(pub String);

impl SamplerError {
    pub fn new(msg: impl Into<String>) -> Self {
        SamplerError(msg.into())
    }
}

impl fmt::Display for SamplerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SamplerError {}

/// Shorthand for an early `Err(SamplerError)` with a formatted message.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::SamplerError(format!($($arg)*)))
    };
}
pub(crate) use bail;
