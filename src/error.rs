//! The engine's error: an HTTP status and a message a user can act on.
//!
//! Every failure of a request ends as an [`ApiError`]; the status is chosen where the cause is
//! known (a registry 404, a containerd `AlreadyExists`, a function's timeout), not guessed at
//! the edge.

use std::fmt;

use tonic::Code;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(400, m)
    }
    pub fn not_found(m: impl Into<String>) -> ApiError {
        ApiError::new(404, m)
    }
    pub fn conflict(m: impl Into<String>) -> ApiError {
        ApiError::new(409, m)
    }
    pub fn unprocessable(m: impl Into<String>) -> ApiError {
        ApiError::new(422, m)
    }
    pub fn internal(m: impl Into<String>) -> ApiError {
        ApiError::new(500, m)
    }
    pub fn bad_gateway(m: impl Into<String>) -> ApiError {
        ApiError::new(502, m)
    }
    pub fn unavailable(m: impl Into<String>) -> ApiError {
        ApiError::new(503, m)
    }

    /// A containerd failure while doing `what`.
    pub fn containerd(what: &str, status: &tonic::Status) -> ApiError {
        let message = format!("containerd: {what}: {}", status.message());
        match status.code() {
            Code::NotFound => ApiError::not_found(message),
            Code::AlreadyExists => ApiError::conflict(message),
            Code::InvalidArgument | Code::FailedPrecondition => ApiError::bad_request(message),
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
                if is_transport(status) =>
            {
                ApiError::unavailable(format!(
                    "containerd unreachable: {what}: {}",
                    status.message()
                ))
            }
            Code::Unavailable => ApiError::unavailable(message),
            _ => ApiError::internal(message),
        }
    }
}

/// Whether a gRPC status came from the connection rather than from containerd.
fn is_transport(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable
        || status.message().contains("transport")
        || status.message().contains("connect")
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

/// Extension for `Result<T, tonic::Status>`: name the operation that failed.
pub trait GrpcContext<T> {
    fn ctx(self, what: &str) -> ApiResult<T>;
}

impl<T> GrpcContext<T> for Result<T, tonic::Status> {
    fn ctx(self, what: &str) -> ApiResult<T> {
        self.map_err(|s| ApiError::containerd(what, &s))
    }
}
