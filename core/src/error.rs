//! The core's typed failures. Loading and calling fail differently: a [`LoadError`] means the
//! module can never run as asked (a deploy-time error), a [`CallError`] concerns one call only
//! and leaves the function usable. Each variant says what was expected or which limit was hit
//! and its value, so the message can go to the caller unchanged.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("module does not compile: {0}")]
    Compile(String),
    #[error("function kind mismatch: {0}")]
    Kind(String),
    #[error("module cannot be linked: {0}")]
    Link(String),
    #[error("invalid configuration: {0}")]
    Config(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("bad arguments: {0}")]
    BadArgs(String),
    #[error("timeout: the call ran longer than {}ms", .0.as_millis())]
    Timeout(Duration),
    #[error("memory limit: the instance tried to grow linear memory to {requested} bytes, over the {limit}-byte cap")]
    MemoryLimit { limit: u64, requested: u64 },
    #[error("fuel limit: the call used up its {0} units of fuel")]
    FuelExhausted(u64),
    #[error("result size limit: the result is over the {limit}-byte cap")]
    OutputTooLarge { limit: usize },
    #[error("trap: {0}")]
    Trap(String),
    #[error("exit status {status}{}", stderr_suffix(.stderr))]
    Exit { status: i32, stderr: String },
    #[error("bad result: {0}")]
    BadOutput(String),
    #[error("interrupted: the runtime is shutting down")]
    Interrupted,
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(", stderr: {stderr}")
    }
}

impl CallError {
    /// A short stable name for the kind of failure, used in metrics and on the wire.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::BadArgs(_) => "bad_args",
            CallError::Timeout(_) => "timeout",
            CallError::MemoryLimit { .. } => "memory_limit",
            CallError::FuelExhausted(_) => "fuel_exhausted",
            CallError::OutputTooLarge { .. } => "output_too_large",
            CallError::Trap(_) => "trap",
            CallError::Exit { .. } => "exit",
            CallError::BadOutput(_) => "bad_output",
            CallError::Interrupted => "interrupted",
            CallError::Instantiate(_) => "instantiate",
        }
    }

    /// Whether a limit stopped the call (as opposed to the function failing by itself).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            CallError::Timeout(_)
                | CallError::MemoryLimit { .. }
                | CallError::FuelExhausted(_)
                | CallError::OutputTooLarge { .. }
        )
    }
}
