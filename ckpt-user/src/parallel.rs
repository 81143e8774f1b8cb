//! Independent work spread over every CPU: checking page runs, reopening files.
//!
//! Threads are scoped and joined before these functions return, so ckpt is
//! single-threaded again afterwards (restore forks its helpers from it).

/// The number of CPUs ckpt may run on (read once: it reads cgroup files).
pub fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `f` of every item, in order; on one thread per CPU when there are at least
/// `min_per_thread` items for each (below that a thread costs more than it saves).
pub fn map<T: Sync, R: Send>(
    items: &[T],
    min_per_thread: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = cpus().min(items.len() / min_per_thread.max(1));
    if threads < 2 {
        return items.iter().map(f).collect();
    }
    let share = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(share)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| match p.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_order_of_items_on_any_number_of_threads() {
        let items: Vec<u32> = (0..10_000).collect();
        for min in [1, 100, 20_000] {
            let out = map(&items, min, |x| x * 2);
            assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        }
        assert!(map(&[] as &[u32], 1, |x| *x).is_empty());
    }
}
