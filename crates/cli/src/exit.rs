//! The exit codes of `toolgate`, documented in `--help` and the README.

use std::process::ExitCode;

/// Everything asked for was done.
pub(crate) const SUCCESS: u8 = 0;
/// An error: bad configuration, a model or tool failure, unreadable input.
pub(crate) const ERROR: u8 = 1;
// 2 is clap's: the command line itself is wrong.
/// A person did not approve a tool call, so it did not run.
pub(crate) const NOT_APPROVED: u8 = 3;

pub(crate) fn code(code: u8) -> ExitCode {
    ExitCode::from(code)
}

pub(crate) const HELP: &str = "\
Exit codes:
  0  success
  1  error (configuration, model, tool or input)
  2  the command line is wrong
  3  a tool call was not approved, so it did not run";
