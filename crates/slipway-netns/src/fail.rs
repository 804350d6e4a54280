//! A failed step of the helper child (what failed, and the errno), shared
//! by the child and the interface configuration it runs. Building one
//! never allocates: the child runs between `fork` and `exec`.

/// A failed step in the child: what, and the errno.
pub(crate) struct Fail {
    pub(crate) what: &'static str,
    pub(crate) errno: i32,
}

/// The failure of `what` with the current errno.
pub(crate) fn last(what: &'static str) -> Fail {
    Fail {
        what,
        errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
    }
}
