//! Connection pools, one per destination (host, address, TLS mode). Each caps the
//! deliveries in progress to its destination, so one slow next hop cannot hold every
//! worker; keeps the connections it is given back until they have been idle for
//! `idle_timeout`; and there are at most `max_pools` of them (when a new destination
//! needs one, the least recently used pool with nothing in progress is dropped).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds of a set of pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deliveries in progress to one destination at a time.
    pub per_destination: usize,
    /// How long an unused connection is kept open.
    pub idle_timeout: Duration,
    /// Destinations remembered at once.
    pub max_pools: usize,
}

/// Pools of connections `C`, keyed by destination `K`.
pub struct Pools<K, C> {
    limits: Limits,
    pools: Mutex<HashMap<K, Arc<Pool<C>>>>,
}

struct Pool<C> {
    in_progress: Arc<Semaphore>,
    idle: Mutex<Vec<Idle<C>>>,
    last_used: Mutex<Instant>,
}

struct Idle<C> {
    conn: C,
    since: Instant,
}

/// The right to deliver to one destination, with its pool's idle connections at hand.
/// Dropping it frees the place.
pub struct Lease<C> {
    pool: Arc<Pool<C>>,
    _place: OwnedSemaphorePermit,
    idle_timeout: Duration,
}

/// A poisoned lock only means another thread panicked while holding it; the data (a
/// list of connections) is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<C> Pool<C> {
    fn new(places: usize) -> Self {
        Self {
            in_progress: Arc::new(Semaphore::new(places.max(1))),
            idle: Mutex::new(Vec::new()),
            last_used: Mutex::new(Instant::now()),
        }
    }

    fn is_unused(&self, places: usize) -> bool {
        self.in_progress.available_permits() >= places.max(1)
    }
}

impl<K: Hash + Eq + Clone, C> Pools<K, C> {
    pub fn new(limits: Limits) -> Self {
        Self { limits, pools: Mutex::new(HashMap::new()) }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A lease on `key`'s pool, or `None` while `per_destination` deliveries to it are
    /// in progress.
    pub fn checkout(&self, key: &K) -> Option<Lease<C>> {
        let pool = {
            let mut pools = lock(&self.pools);
            match pools.get(key) {
                Some(pool) => pool.clone(),
                None => {
                    let pool = Arc::new(Pool::new(self.limits.per_destination));
                    if pools.len() >= self.limits.max_pools.max(1) {
                        self.evict_one(&mut pools);
                    }
                    // With every pool busy, this one serves its lease and is then forgotten.
                    if pools.len() < self.limits.max_pools.max(1) {
                        pools.insert(key.clone(), pool.clone());
                    }
                    pool
                }
            }
        };
        let place = pool.in_progress.clone().try_acquire_owned().ok()?;
        *lock(&pool.last_used) = Instant::now();
        Some(Lease { pool, _place: place, idle_timeout: self.limits.idle_timeout })
    }

    /// Drops the least recently used pool that has no delivery in progress.
    fn evict_one(&self, pools: &mut HashMap<K, Arc<Pool<C>>>) {
        let places = self.limits.per_destination;
        let oldest = pools
            .iter()
            .filter(|(_, p)| p.is_unused(places))
            .min_by_key(|(_, p)| *lock(&p.last_used))
            .map(|(k, _)| k.clone());
        if let Some(key) = oldest {
            pools.remove(&key);
        }
    }

    /// Idle connections past the idle timeout, taken out to be closed; pools left with
    /// nothing are forgotten.
    pub fn expired(&self) -> Vec<C> {
        let now = Instant::now();
        let timeout = self.limits.idle_timeout;
        let places = self.limits.per_destination;
        let mut out = Vec::new();
        let mut pools = lock(&self.pools);
        pools.retain(|_, pool| {
            let mut idle = lock(&pool.idle);
            let (old, fresh): (Vec<_>, Vec<_>) =
                std::mem::take(&mut *idle).into_iter().partition(|i| now.duration_since(i.since) >= timeout);
            *idle = fresh;
            out.extend(old.into_iter().map(|i| i.conn));
            let forgotten = idle.is_empty()
                && pool.is_unused(places)
                && now.duration_since(*lock(&pool.last_used)) >= timeout;
            !forgotten
        });
        out
    }

    /// How many destinations have a pool.
    pub fn len(&self) -> usize {
        lock(&self.pools).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<C> Lease<C> {
    /// The most recently used idle connection, unless it has been idle too long (then it
    /// is dropped, which closes it).
    pub fn take_idle(&mut self) -> Option<C> {
        let mut idle = lock(&self.pool.idle);
        while let Some(i) = idle.pop() {
            if i.since.elapsed() < self.idle_timeout {
                return Some(i.conn);
            }
        }
        None
    }

    /// Gives a connection back for the next delivery to this destination.
    pub fn put_back(&self, conn: C) {
        lock(&self.pool.idle).push(Idle { conn, since: Instant::now() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(per_destination: usize, idle_secs: u64, max_pools: usize) -> Pools<&'static str, u32> {
        Pools::new(Limits { per_destination, idle_timeout: Duration::from_secs(idle_secs), max_pools })
    }

    #[test]
    fn a_destination_takes_at_most_its_places() {
        let p = pools(2, 60, 10);
        let a = p.checkout(&"a").unwrap();
        let _b = p.checkout(&"a").unwrap();
        assert!(p.checkout(&"a").is_none(), "a third delivery to a full destination");
        assert!(p.checkout(&"other").is_some(), "another destination is not held up");
        drop(a);
        assert!(p.checkout(&"a").is_some(), "a place frees when a lease ends");
    }

    #[test]
    fn connections_given_back_are_reused_newest_first() {
        let p = pools(1, 60, 10);
        let mut lease = p.checkout(&"a").unwrap();
        assert_eq!(lease.take_idle(), None);
        lease.put_back(1);
        lease.put_back(2);
        drop(lease);
        let mut lease = p.checkout(&"a").unwrap();
        assert_eq!(lease.take_idle(), Some(2));
        assert_eq!(lease.take_idle(), Some(1));
        assert_eq!(lease.take_idle(), None);
    }

    #[test]
    fn idle_connections_expire() {
        let p = pools(1, 0, 10);
        let mut lease = p.checkout(&"a").unwrap();
        lease.put_back(7);
        assert_eq!(lease.take_idle(), None, "past the idle timeout it is not reused");
        lease.put_back(8);
        drop(lease);
        assert_eq!(p.expired(), vec![8]);
        assert!(p.is_empty(), "an empty, unused pool is forgotten");
    }

    #[test]
    fn the_number_of_pools_is_bounded() {
        let p = pools(1, 60, 2);
        drop(p.checkout(&"a"));
        let _b = p.checkout(&"b").unwrap();
        let _c = p.checkout(&"c").unwrap();
        assert_eq!(p.len(), 2, "the unused pool of a went");
        // b and c are busy: d still gets a lease, from a pool that is not kept.
        let d = p.checkout(&"d").unwrap();
        d.put_back(4);
        drop(d);
        assert_eq!(p.len(), 2);
        assert!(p.checkout(&"d").unwrap().take_idle().is_none());
    }
}
