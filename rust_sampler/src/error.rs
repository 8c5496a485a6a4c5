//! The one error type of the plain-Rust modules; lib.rs maps each kind to a Python exception.

use std::fmt;

/// What went wrong, by whose fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SamplerError {
    /// A caller mistake (bad argument, out-of-range value); the message names the argument.
    /// Python sees ValueError (s4g.sampling turns it into UserInputError).
    InvalidArgument(String),
    /// A broken invariant inside the sampler: a bug, never the caller's fault.
    /// Python sees RuntimeError, which s4g lets through with its traceback.
    Internal(String),
}

impl SamplerError {
    /// The message without the kind.
    pub fn message(&self) -> &str {
        match self {
            SamplerError::InvalidArgument(m) | SamplerError::Internal(m) => m,
        }
    }
}

impl fmt::Display for SamplerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SamplerError::InvalidArgument(m) => f.write_str(m),
            SamplerError::Internal(m) => write!(f, "internal error in s4g's sampler (a bug): {m}"),
        }
    }
}

impl std::error::Error for SamplerError {}

/// Shorthand for an early `Err(SamplerError::InvalidArgument)` with a formatted message.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::SamplerError::InvalidArgument(format!($($arg)*)))
    };
}
pub(crate) use bail;
