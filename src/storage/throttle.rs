//! Bandwidth limits (`--limit-upload`, `--limit-download`, in KiB/s, as restic's): a token
//! bucket per direction, wrapped around a store ([`ThrottledStore`]). The buckets belong to
//! the process's [`RateLimits`], which every store it opens shares (local or S3, the
//! repository and a sync's target alike), so the limit holds for all threads and stores
//! together.
//!
//! Upload counts the bytes of every object written (packs, index files, snapshots, keys);
//! download the bytes of every object read. A write waits for its bytes before it is made; a
//! read of a known length (a range) waits before it is made, a whole object once its bytes
//! are in (its length is known only then). Listings, sizes and deletions are not counted.
//!
//! The bucket lends: a request larger than what is in the bucket takes it into debt, and
//! waits until the debt is paid back at the rate, so a pack of 16 MiB passes a limit of
//! 512 KiB/s in 32 s, and whoever asks next waits behind it. The bucket holds at most a
//! quarter of a second of bytes ([`BURST`]), so an idle spell buys little.
//!
//! Lock objects (`locks/`, a few hundred bytes every five minutes) are never held back: a
//! refresh queued behind the packs in flight would wait their whole debt (an hour at a few
//! KiB/s), and a lock not refreshed for 30 minutes counts as stale, so another process's
//! prune could take it for a dead one's.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{IoStats, Listed, ObjectStore, ObjectWriter, StorageError};

/// How long a full bucket lasts at the rate: what may pass at once after an idle spell.
pub const BURST: Duration = Duration::from_millis(250);
/// Objects under these prefixes pass unlimited (the repository's locks).
const UNLIMITED_PREFIXES: [&str; 1] = ["locks/"];

/// Whether the object `name` passes whatever the limits.
fn unlimited(name: &str) -> bool {
    UNLIMITED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A token bucket on a simulated or real clock: no clock of its own, no sleeping. Tokens are
/// bytes; they come at `rate` per second up to `burst`. Integer arithmetic in
/// byte-nanoseconds, so the waits are exact to the nanosecond whatever the run's length.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Bytes per second.
    rate: u64,
    /// Most tokens held, in byte-nanoseconds (bytes times 10^9).
    burst: i128,
    /// Tokens held now, in byte-nanoseconds; negative while a request larger than the
    /// bucket is paid back.
    tokens: i128,
    /// When `tokens` was last brought up to date.
    last: Duration,
}

const NANOS: i128 = 1_000_000_000;

impl TokenBucket {
    /// A full bucket of `bytes_per_sec` (at least 1) at time `now`.
    pub fn new(bytes_per_sec: u64, now: Duration) -> Self {
        let rate = bytes_per_sec.max(1);
        let burst = (i128::from(rate) * BURST.as_nanos() as i128).max(NANOS);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Take `bytes` at time `now`; returns how long the caller must wait before they may go
    /// (zero when the bucket held them). What is taken is gone even if the caller then fails.
    /// A `now` earlier than one seen before counts as that one.
    pub fn take(&mut self, bytes: u64, now: Duration) -> Duration {
        if now > self.last {
            let earned = i128::from(self.rate) * (now - self.last).as_nanos() as i128;
            self.tokens = self.tokens.saturating_add(earned).min(self.burst);
            self.last = now;
        }
        self.tokens -= i128::from(bytes) * NANOS;
        if self.tokens >= 0 {
            return Duration::ZERO;
        }
        // Rounded up: once it is over, the debt is paid.
        let rate = i128::from(self.rate);
        let nanos = (-self.tokens + rate - 1) / rate;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }
}

/// Time as a limiter sees it: real for the program, simulated in tests.
pub trait Clock: Send + Sync {
    /// Time since some fixed start.
    fn now(&self) -> Duration;
    /// Let `d` pass.
    fn sleep(&self, d: Duration);
}

/// The real clock: monotonic time since it was made, and `thread::sleep`.
struct SystemClock(Instant);

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A token bucket shared by threads: each takes its bytes under the lock, then sleeps
/// outside it for as long as the bucket says.
pub struct Limiter {
    bucket: Mutex<TokenBucket>,
    clock: Arc<dyn Clock>,
}

impl Limiter {
    /// A limiter of `bytes_per_sec` on `clock`.
    pub fn new(bytes_per_sec: u64, clock: Arc<dyn Clock>) -> Self {
        let bucket = Mutex::new(TokenBucket::new(bytes_per_sec, clock.now()));
        Limiter { bucket, clock }
    }

    /// Wait until `bytes` may pass.
    pub fn pass(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let wait = {
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            b.take(bytes, self.clock.now())
        };
        if !wait.is_zero() {
            self.clock.sleep(wait);
        }
    }

    /// Bytes per second.
    pub fn rate(&self) -> u64 {
        self.bucket.lock().unwrap_or_else(|p| p.into_inner()).rate()
    }
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("bytes_per_sec", &self.rate())
            .finish()
    }
}

/// The process's limits, one limiter per direction (`None`: unlimited). Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct RateLimits {
    upload: Option<Arc<Limiter>>,
    download: Option<Arc<Limiter>>,
}

impl RateLimits {
    /// Limits of `upload_kib` and `download_kib` KiB/s (1024 bytes); 0 is unlimited.
    pub fn kib_per_sec(upload_kib: u64, download_kib: u64) -> Self {
        Self::with_clock(
            upload_kib.saturating_mul(1024),
            download_kib.saturating_mul(1024),
            Arc::new(SystemClock(Instant::now())),
        )
    }

    /// Limits in bytes per second on `clock`; 0 is unlimited.
    pub fn with_clock(upload: u64, download: u64, clock: Arc<dyn Clock>) -> Self {
        let limiter = |rate: u64| (rate > 0).then(|| Arc::new(Limiter::new(rate, clock.clone())));
        RateLimits {
            upload: limiter(upload),
            download: limiter(download),
        }
    }

    /// Whether neither direction is limited.
    pub fn is_unlimited(&self) -> bool {
        self.upload.is_none() && self.download.is_none()
    }

    /// `store`, limited (itself when nothing is).
    pub fn wrap(&self, store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        if self.is_unlimited() {
            return store;
        }
        Arc::new(ThrottledStore {
            inner: store,
            limits: self.clone(),
        })
    }

    /// Wait until `bytes` may be written to the object `name` (`None`: a spooled object,
    /// not named yet).
    fn up(&self, name: Option<&str>, bytes: usize) {
        if let Some(l) = &self.upload
            && !name.is_some_and(unlimited)
        {
            l.pass(bytes as u64);
        }
    }

    /// Wait until `bytes` may be read from the object `name`.
    fn down(&self, name: &str, bytes: u64) {
        if let Some(l) = &self.download
            && !unlimited(name)
        {
            l.pass(bytes);
        }
    }
}

/// A store whose writes and reads pass the process's [`RateLimits`].
pub struct ThrottledStore {
    inner: Arc<dyn ObjectStore>,
    limits: RateLimits,
}

impl ObjectStore for ThrottledStore {
    fn read(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        let b = self.inner.read(name)?;
        self.limits.down(name, b.len() as u64);
        Ok(b)
    }
    fn read_at_most(&self, name: &str, max: u64) -> Result<Vec<u8>, StorageError> {
        let b = self.inner.read_at_most(name, max)?;
        self.limits.down(name, b.len() as u64);
        Ok(b)
    }
    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        self.limits.down(name, len);
        self.inner.read_range(name, offset, len)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.limits.up(Some(name), bytes.len());
        self.inner.write(name, bytes)
    }
    fn create_new(&self, name: &str, bytes: &[u8]) -> Result<bool, StorageError> {
        self.limits.up(Some(name), bytes.len());
        self.inner.create_new(name, bytes)
    }
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, StorageError> {
        self.inner.list(prefix)
    }
    fn size(&self, name: &str) -> Result<Option<u64>, StorageError> {
        self.inner.size(name)
    }
    fn delete(&self, name: &str) -> Result<(), StorageError> {
        self.inner.delete(name)
    }
    fn write_owned(&self, name: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.limits.up(Some(name), bytes.len());
        self.inner.write_owned(name, bytes)
    }
    fn spool(&self) -> Result<Option<Box<dyn ObjectWriter>>, StorageError> {
        Ok(self.inner.spool()?.map(|inner| {
            Box::new(ThrottledWriter {
                inner,
                limits: self.limits.clone(),
            }) as Box<dyn ObjectWriter>
        }))
    }
    fn clean_leftovers(&self) -> Result<u64, StorageError> {
        self.inner.clean_leftovers()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn io_stats(&self) -> Option<IoStats> {
        self.inner.io_stats()
    }
    fn parallel_writes(&self) -> usize {
        self.inner.parallel_writes()
    }
}

/// A spooled object whose pieces pass the upload limit as they are written.
struct ThrottledWriter {
    inner: Box<dyn ObjectWriter>,
    limits: RateLimits,
}

impl ObjectWriter for ThrottledWriter {
    fn append(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.limits.up(None, bytes.len());
        self.inner.append(bytes)
    }
    fn finish(self: Box<Self>, name: &str) -> Result<(), StorageError> {
        self.inner.finish(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStore;

    const KIB: u64 = 1024;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn a_full_bucket_lets_its_burst_pass_then_paces_at_the_rate() {
        // 1000 bytes/s: a burst of 250 bytes.
        let mut b = TokenBucket::new(1000, at(0));
        assert_eq!(b.take(250, at(0)), Duration::ZERO);
        // Empty: 100 more bytes wait 0.1 s.
        assert_eq!(b.take(100, at(0)), at(100));
        // Half a second later the debt is paid and 400 more bytes came in, cut to the burst.
        assert_eq!(b.take(250, at(600)), Duration::ZERO);
        assert_eq!(b.take(1, at(600)), at(1));
    }

    #[test]
    fn a_request_larger_than_the_bucket_waits_for_its_debt_and_so_does_the_next() {
        let mut b = TokenBucket::new(1000, at(0));
        // 2250 bytes: the 250 of the bucket, then 2 s of debt.
        assert_eq!(b.take(2250, at(0)), at(2000));
        // One byte asked at 0.5 s queues behind the debt still owed (1.5 s) and itself.
        assert_eq!(b.take(1, at(500)), at(1501));
        // Once paid, the rate goes on: at 2.001 s the bucket is empty again.
        assert_eq!(b.take(10, at(2001)), at(10));
    }

    #[test]
    fn over_a_long_run_the_rate_holds_whatever_the_request_sizes() {
        // Requests of varying sizes, each made as soon as the previous one's wait ends: the
        // simulated time to move N bytes is (N - burst) / rate.
        let rate = 512 * KIB;
        let mut now = Duration::ZERO;
        let mut b = TokenBucket::new(rate, now);
        let mut moved = 0u64;
        for i in 0..2000u64 {
            let n = 1 + (i * 7919) % (64 * KIB);
            now += b.take(n, now);
            moved += n;
        }
        let expected = (moved as f64 - rate as f64 * BURST.as_secs_f64()) / rate as f64;
        let got = now.as_secs_f64();
        // Each wait is rounded up to the nanosecond.
        assert!(
            got >= expected && got - expected < 1e-5,
            "{got} s, expected {expected} s"
        );
    }

    #[test]
    fn an_idle_spell_buys_no_more_than_the_burst() {
        let mut b = TokenBucket::new(1000, at(0));
        assert_eq!(b.take(1000, at(3_600_000)), at(750));
        // A clock that goes back counts as the last time seen.
        assert_eq!(b.take(0, at(0)), at(750));
    }

    /// Simulated time: sleeping moves it on.
    #[derive(Default)]
    struct FakeClock(Mutex<Duration>);

    impl Clock for FakeClock {
        fn now(&self) -> Duration {
            *self.0.lock().unwrap()
        }
        fn sleep(&self, d: Duration) {
            *self.0.lock().unwrap() += d;
        }
    }

    #[test]
    fn a_throttled_store_counts_writes_and_reads_in_their_own_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FakeClock::default());
        // Upload 100 KiB/s, download 200 KiB/s.
        let limits = RateLimits::with_clock(100 * KIB, 200 * KIB, clock.clone());
        let store = limits.wrap(Arc::new(LocalStore::new(dir.path().to_path_buf())));
        let mb = vec![7u8; 1 << 20];
        store.write("packs/aa/aa01", &mb).unwrap();
        // 1 MiB at 100 KiB/s, less the quarter second of burst.
        assert_eq!(clock.now(), at(10_240 - 250));
        let before = clock.now();
        assert_eq!(store.read("packs/aa/aa01").unwrap().len(), 1 << 20);
        assert_eq!(clock.now() - before, at(5_120 - 250));
        // Listings and sizes are free.
        let before = clock.now();
        store.list("packs/").unwrap();
        store.size("packs/aa/aa01").unwrap();
        store.delete("packs/aa/aa01").unwrap();
        assert_eq!(clock.now(), before);
        // A spooled object pays as its pieces are written (the upload bucket filled up
        // while the download was paced).
        let mut w = store.spool().unwrap().expect("a local store spools");
        w.append(&mb[..100 * 1024]).unwrap();
        w.append(&mb[..100 * 1024]).unwrap();
        assert_eq!(clock.now() - before, at(2000 - 250));
        w.finish("packs/bb/bb01").unwrap();
        assert_eq!(store.read_range("packs/bb/bb01", 0, 10).unwrap().len(), 10);
        // Locks are never held back, however deep the debt.
        store.write("packs/cc/cc01", &mb).unwrap();
        let before = clock.now();
        assert!(store.create_new("locks/l1", &mb[..300]).unwrap());
        store.write("locks/l2", &mb[..300]).unwrap();
        assert_eq!(store.read("locks/l1").unwrap().len(), 300);
        assert_eq!(clock.now(), before);
    }

    #[test]
    fn a_throttled_store_is_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let limits = RateLimits::with_clock(KIB, KIB, Arc::new(FakeClock::default()));
        let store = limits.wrap(Arc::new(LocalStore::new(dir.path().to_path_buf())));
        crate::storage::conformance::run(store.as_ref());
        crate::storage::conformance::run_spool(store.as_ref());
    }

    #[test]
    fn threads_share_one_bucket() {
        let clock = Arc::new(FakeClock::default());
        let limiter = Arc::new(Limiter::new(1000, clock.clone()));
        std::thread::scope(|s| {
            for _ in 0..4 {
                let l = limiter.clone();
                s.spawn(move || {
                    for _ in 0..10 {
                        l.pass(100);
                    }
                });
            }
        });
        // 4000 bytes at 1000 bytes/s, less the burst: each thread's wait adds to the
        // simulated clock, and the waits together make up the debt.
        let waited = clock.now().as_secs_f64();
        assert!(waited >= 3.75 - 1e-9, "{waited}");
    }

    #[test]
    fn zero_is_unlimited() {
        let limits = RateLimits::kib_per_sec(0, 0);
        assert!(limits.is_unlimited());
        assert!(!RateLimits::kib_per_sec(1, 0).is_unlimited());
        assert_eq!(
            RateLimits::kib_per_sec(0, 512)
                .download
                .as_ref()
                .map(|l| l.rate()),
            Some(512 * 1024)
        );
    }
}
