//! The client's side of stdio, read and written by the runtime's reactor.
//!
//! Tokio's `stdin()` and `stdout()` do each read and write on a thread of
//! the blocking pool, since a terminal or a file cannot be waited on: two
//! hand-offs between threads for every message, each way. An MCP client
//! starts the gateway with pipes or a socket pair for stdin and stdout,
//! and those can be waited on, so the gateway makes them non-blocking and
//! hands them to the reactor. Anything else (a terminal, a file) keeps
//! tokio's way.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt as _;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;
use tokio::net::unix::pipe;

/// This process's stdin, for the MCP client's messages.
pub(crate) fn input() -> Box<dyn AsyncRead + Send + Unpin> {
    match watched(io::stdin().as_fd().try_clone_to_owned()) {
        Some(Watched::Pipe(fd)) => match pipe::Receiver::from_file(File::from(fd)) {
            Ok(receiver) => Box::new(receiver),
            Err(_) => Box::new(tokio::io::stdin()),
        },
        Some(Watched::Socket(stream)) => Box::new(stream),
        None => Box::new(tokio::io::stdin()),
    }
}

/// This process's stdout, for the messages to the MCP client.
pub(crate) fn output() -> Box<dyn AsyncWrite + Send + Unpin> {
    match watched(io::stdout().as_fd().try_clone_to_owned()) {
        Some(Watched::Pipe(fd)) => match pipe::Sender::from_file(File::from(fd)) {
            Ok(sender) => Box::new(sender),
            Err(_) => Box::new(tokio::io::stdout()),
        },
        Some(Watched::Socket(stream)) => Box::new(stream),
        None => Box::new(tokio::io::stdout()),
    }
}

/// A standard stream that the reactor can wait on.
enum Watched {
    Pipe(OwnedFd),
    Socket(UnixStream),
}

/// What the duplicated descriptor `fd` of a standard stream is, when the
/// reactor can wait on it.
fn watched(fd: io::Result<OwnedFd>) -> Option<Watched> {
    let fd = fd.ok()?;
    let kind = File::from(fd.try_clone().ok()?)
        .metadata()
        .ok()?
        .file_type();
    if kind.is_fifo() {
        return Some(Watched::Pipe(fd));
    }
    if kind.is_socket() {
        let stream = std::os::unix::net::UnixStream::from(fd);
        // A socket of another family (TCP, say) is no Unix stream.
        stream.local_addr().ok()?;
        stream.set_nonblocking(true).ok()?;
        return UnixStream::from_std(stream).ok().map(Watched::Socket);
    }
    None
}
