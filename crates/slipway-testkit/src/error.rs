//! The one error type of the harness.

use std::fmt;
use std::io;
use std::time::Duration;

/// Everything that can go wrong while building the guest, running it, or
/// running a host-side peer. Messages name the tool, file or guest involved and
/// carry the console transcript where there is one, so a failing test explains
/// itself.
#[derive(thiserror::Error)]
pub enum Error {
    /// A program the harness needs is not installed.
    #[error("`{tool}` not found: install the Debian package `{package}` (scripts/test.sh installs everything in scripts/test-packages.txt)")]
    MissingTool {
        /// The program that was looked for.
        tool: String,
        /// The Debian package that provides it.
        package: String,
    },
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path or program.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A helper program ran but failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// Its captured stderr (and stdout where useful).
        output: String,
    },
    /// The guest image could not be built from what is on the machine.
    #[error("building the test guest image: {0}")]
    Image(String),
    /// Something did not happen within its time limit.
    #[error("{what}: timed out after {timeout:?}\n{transcript}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// The limit that expired.
        timeout: Duration,
        /// Console output, QEMU stderr and command line, for debugging.
        transcript: String,
    },
    /// The guest (or QEMU) ended without doing what the test expected.
    #[error("guest failed: {reason}\n{transcript}")]
    Guest {
        /// Why the run counts as failed.
        reason: String,
        /// Console output, QEMU stderr and command line, for debugging.
        transcript: String,
    },
    /// A host-side peer (HTTP or DNS server) did not start.
    #[error("{what} did not start: {reason}")]
    Peer {
        /// The peer, e.g. "busybox httpd on 127.0.0.1:8080".
        what: String,
        /// Why, including its stderr.
        reason: String,
    },
    /// A builder was given an unusable option.
    #[error("invalid guest option: {0}")]
    InvalidOption(String),
}

// Tests report errors with `{:?}` (`unwrap`, `expect`, `-> Result` tests);
// the derived Debug would print the multi-line console transcript as one
// escaped string, so Debug shows the readable Display text instead.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result with the harness's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
