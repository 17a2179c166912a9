//! The error type shared by every step of a chain.

use crate::chain::CallToolsError;
use crate::model::ModelError;
use crate::seed::NotApproved;
use crate::tool::ToolError;

/// Any error, boxed, for the sources of toolgate's typed errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result of a chain step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a chain stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A person did not approve the tool calls.
    #[error(transparent)]
    NotApproved(#[from] NotApproved),
    /// A model failed to answer.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A tool call could not run or failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// A tool call failed part-way through a list of calls.
    #[error(transparent)]
    CallTools(Box<CallToolsError>),
    /// A step written by the user failed.
    #[error(transparent)]
    Other(BoxError),
}

impl From<CallToolsError> for Error {
    fn from(error: CallToolsError) -> Self {
        Error::CallTools(Box::new(error))
    }
}

impl Error {
    /// Wraps any error as [`Error::Other`].
    pub fn other(error: impl Into<BoxError>) -> Self {
        Error::Other(error.into())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_stay_small_enough_to_return_by_value() {
        // Large variants are boxed; keep `Result<T, Error>` cheap to move.
        assert!(
            std::mem::size_of::<super::Error>() <= 128,
            "{}",
            std::mem::size_of::<super::Error>()
        );
    }
}
