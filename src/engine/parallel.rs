//! Storage requests several at a time: on object storage each is a round trip, and a prune
//! or sync of a repository with thousands of objects is otherwise a queue of them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::EngineError;

/// Requests in flight when nothing else says how many.
pub const DEFAULT_REQUESTS: usize = 16;

/// Run `f` on every item with `threads` threads; the first error stops the others.
pub fn for_each<T: Sync>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<(), EngineError> + Sync,
) -> Result<(), EngineError> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<EngineError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, 64).min(items.len().max(1)) {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if let Err(e) = f(item) {
                        failed.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `f` of every item, in the order of `items`, with `threads` threads; the first error
/// stops the others.
pub fn map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<R, EngineError> + Sync,
) -> Result<Vec<R>, EngineError> {
    let out: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let indexed: Vec<(usize, &T)> = items.iter().enumerate().collect();
    for_each(&indexed, threads, |(i, item)| {
        let r = f(item)?;
        out.lock().unwrap_or_else(|p| p.into_inner())[*i] = Some(r);
        Ok(())
    })?;
    out.into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.ok_or_else(|| EngineError::Internal("a parallel result is missing".into())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keeps_the_order_and_stops_at_an_error() {
        let items: Vec<u32> = (0..500).collect();
        assert_eq!(
            map(&items, 8, |&i| Ok(i * 2)).unwrap(),
            (0..500).map(|i| i * 2).collect::<Vec<_>>()
        );
        let err = map(&items, 8, |&i| {
            if i == 250 {
                Err(EngineError::Internal("boom".into()))
            } else {
                Ok(i)
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        assert!(map(&[] as &[u32], 8, |&i| Ok(i)).unwrap().is_empty());
    }
}
