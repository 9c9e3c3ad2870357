//! The process's one tokio runtime for network I/O: S3 stores (opendal), the Docker engine
//! (bollard), notifications (reqwest) and the metrics server (hyper). The rest of coffer is
//! synchronous (rayon and threads) and calls in with `block_on` from its own threads.
//!
//! One runtime, not one per store or client: a daemon that opens two repositories, talks to
//! Docker and sends notifications keeps two I/O threads, not a runtime per connection. It is
//! owned at the top (the CLI's global options, which every command and the daemon hand down)
//! and started lazily, on the first [`IoRuntime::handle`]: a command on a local repository
//! that needs no async I/O starts no thread.
//!
//! It also carries the process's bandwidth limits ([`RateLimits`], `--limit-upload` and
//! `--limit-download`): every store opened with it (local or S3) passes its bytes through the
//! same two token buckets, so a limit holds for the whole process.
//!
//! Rules: never `block_on` inside async code or a rayon task. Dropping the last reference
//! shuts the runtime down in the background (it neither waits nor panics, even inside async
//! code), so what is still in flight then is abandoned: keep the owner alive until the work
//! is done.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use crate::storage::RateLimits;

/// Worker threads of the runtime: network I/O waits, it does not compute.
pub const WORKER_THREADS: usize = 2;
/// Name of the runtime's threads.
pub const THREAD_NAME: &str = "coffer-io";

/// The I/O runtime, not started until first used. Cloning shares it.
#[derive(Clone, Default)]
pub struct IoRuntime {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    runtime: OnceLock<tokio::runtime::Runtime>,
    limits: RateLimits,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // A plain drop waits for the runtime's threads and panics inside async code.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for IoRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoRuntime")
            .field("started", &self.is_started())
            .field("limits", &self.shared.limits)
            .finish()
    }
}

impl IoRuntime {
    /// A runtime to be started on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// A runtime to be started on first use, whose stores pass the bandwidth `limits`.
    pub fn with_rate_limits(limits: RateLimits) -> Self {
        IoRuntime {
            shared: Arc::new(Shared {
                runtime: OnceLock::new(),
                limits,
            }),
        }
    }

    /// The bandwidth limits of the stores opened with this runtime (shared by its clones).
    pub fn rate_limits(&self) -> &RateLimits {
        &self.shared.limits
    }

    /// Whether it has been started.
    pub fn is_started(&self) -> bool {
        self.shared.runtime.get().is_some()
    }

    /// A handle to the runtime, which is started now if it was not. Fails only when the
    /// operating system refuses the threads.
    pub fn handle(&self) -> std::io::Result<IoHandle> {
        let handle = match self.shared.runtime.get() {
            Some(rt) => rt.handle().clone(),
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(WORKER_THREADS)
                    .thread_name(THREAD_NAME)
                    .enable_all()
                    .build()?;
                // Two threads may start it at once: the first one stored is kept, the other
                // is shut down unused.
                if let Err(extra) = self.shared.runtime.set(rt) {
                    extra.shutdown_background();
                }
                match self.shared.runtime.get() {
                    Some(rt) => rt.handle().clone(),
                    None => return Err(std::io::Error::other("the I/O runtime did not start")),
                }
            }
        };
        Ok(IoHandle {
            handle,
            _keep: self.shared.clone(),
        })
    }
}

/// A started runtime, held by what does async I/O on it; it keeps the runtime alive.
#[derive(Clone)]
pub struct IoHandle {
    handle: tokio::runtime::Handle,
    _keep: Arc<Shared>,
}

impl std::fmt::Debug for IoHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoHandle").finish_non_exhaustive()
    }
}

impl IoHandle {
    /// Run `future` to its end on the calling thread, its I/O driven by the runtime's
    /// threads. Panics when called from inside async code.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }

    /// Enter the runtime's context (clients that set up timers or sockets when they are
    /// built or a request is made, not when it is polled, need it).
    pub fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.handle.enter()
    }

    /// Run `future` in the background on the runtime's threads, as long as the runtime lives.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_first_use_and_clones_share_it() {
        let io = IoRuntime::new();
        let other = io.clone();
        assert!(!io.is_started());
        let h = other.handle().unwrap();
        assert!(io.is_started());
        let name = h.block_on(async {
            tokio::spawn(async { std::thread::current().name().map(str::to_string) })
                .await
                .unwrap()
        });
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
        assert_eq!(h.block_on(async { 7 }), 7);
    }

    #[test]
    fn the_last_reference_may_go_inside_async_code() {
        let io = IoRuntime::new();
        let h = io.handle().unwrap();
        let last = h.clone();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (done, finished) = std::sync::mpsc::channel();
        h.spawn(async move {
            let _ = wait.await;
            drop(last);
            let _ = done.send(());
        });
        drop(io);
        drop(h);
        go.send(()).unwrap();
        // A panic in the task would drop `done` unsent.
        finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
    }
}
