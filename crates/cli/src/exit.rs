//! The exit codes of `toolgate`, documented in `--help` and the README.

use std::process::ExitCode;

/// Everything asked for was done.
pub(crate) const SUCCESS: u8 = 0;
/// An error: bad configuration, a model or tool failure, unreadable input.
pub(crate) const ERROR: u8 = 1;
// 2 is clap's: the command line itself is wrong.
/// A person did not approve a tool call, so it did not run.
pub(crate) const NOT_APPROVED: u8 = 3;
/// The run waits for people (approvals or in-doubt calls); resume it later.
pub(crate) const WAITING: u8 = 4;
/// The audit log does not verify: an entry was changed, deleted or moved.
pub(crate) const AUDIT_BROKEN: u8 = 5;

pub(crate) fn code(code: u8) -> ExitCode {
    ExitCode::from(code)
}

pub(crate) const HELP: &str = "\
Exit codes:
  0  success
  1  error (configuration, model, tool, store or input)
  2  the command line is wrong
  3  a tool call was not approved, so it did not run
  4  the run waits for people: decide its approvals, then `toolgate runs resume`
  5  the audit log does not verify";
