//! The class of an error: what kind of failure it is, independent of the layer that raised
//! it. Every layer's error enum has a `class()` that delegates to the error it wraps, so the
//! command line maps any error to an exit code with one call, without knowing the layers.
//!
//! Three classes never mix (see STYLE.md): corruption (name the object; never retried),
//! transient storage errors (retried below the repository), and user or configuration errors
//! (say what to do). The others name the failures that have an exit code of their own.

/// What kind of failure an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// No repository at the location.
    NoRepository,
    /// Another process holds a conflicting lock.
    Locked,
    /// No key opened with the passphrase.
    WrongPassword,
    /// A stored object is damaged or missing.
    Corrupt,
    /// Storage, the network, the local file system or the container engine failed; trying
    /// again may work.
    Transient,
    /// What the user asked for or configured cannot be done.
    User,
    /// The run was interrupted by a signal.
    Interrupted,
    /// A bug: a panicked thread or a broken invariant.
    Internal,
}
