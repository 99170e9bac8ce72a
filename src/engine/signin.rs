//! Sign-in throttling (SPEC §8): the wait after failed sign-ins applies before the
//! password is checked, per source address and per user name, so that guesses sent
//! in parallel are refused rather than checked all at once; and the table of
//! failures is bounded, so that a flood of addresses cannot grow it without end.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The wait after the first failure; each further failure doubles it.
const FIRST_WAIT: Duration = Duration::from_millis(500);
/// The longest wait.
const MAX_WAIT: Duration = Duration::from_secs(8);
/// A record of failures is forgotten this long after its last attempt.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Most records kept per kind (addresses, user names).
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Record {
    /// Attempts since the last success, counting the one in progress.
    attempts: u32,
    /// No attempt is checked before this.
    blocked_until: Instant,
    last: Instant,
}

/// Failed and in-progress sign-ins, per address and per user name.
#[derive(Default)]
pub struct SignInThrottle {
    addresses: Mutex<HashMap<String, Record>>,
    users: Mutex<HashMap<String, Record>>,
}

/// The wait after `attempts` attempts that have not (yet) succeeded.
fn wait_after(attempts: u32) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    (FIRST_WAIT * 2u32.saturating_pow(attempts.saturating_sub(1).min(10))).min(MAX_WAIT)
}

impl SignInThrottle {
    /// Called before a password is checked. `Err(wait)` refuses the attempt
    /// unchecked: the address or the user name is still waiting after earlier
    /// failures (or an attempt in progress). `Ok(until)` counts the attempt as a
    /// failure until [`SignInThrottle::succeeded`] says otherwise, so parallel
    /// guesses are refused while one is checked; a wrong password is answered no
    /// sooner than `until`, so a client that waits for the answer is never refused.
    pub fn begin(&self, address: &str, user: &str, now: Instant) -> Result<Instant, Duration> {
        let mut addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let user = user.to_lowercase();
        let blocked = [addresses.get(address), users.get(&user)]
            .into_iter()
            .flatten()
            .map(|r| r.blocked_until)
            .max()
            .filter(|until| *until > now);
        if let Some(until) = blocked {
            return Err(until - now);
        }
        let mut until = now;
        for (map, key) in [(&mut *addresses, address.to_string()), (&mut *users, user)] {
            make_room(map, &key, now);
            let r = map.entry(key).or_insert(Record { attempts: 0, blocked_until: now, last: now });
            r.attempts += 1;
            r.last = now;
            r.blocked_until = now + wait_after(r.attempts);
            until = until.max(r.blocked_until);
        }
        Ok(until)
    }

    /// The password was right: the address and the user name start over.
    pub fn succeeded(&self, address: &str, user: &str) {
        self.addresses.lock().unwrap_or_else(|p| p.into_inner()).remove(address);
        self.users.lock().unwrap_or_else(|p| p.into_inner()).remove(&user.to_lowercase());
    }

    /// Records kept, addresses and user names together.
    pub fn len(&self) -> usize {
        self.addresses.lock().unwrap_or_else(|p| p.into_inner()).len()
            + self.users.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps a map under [`MAX_ENTRIES`] before `key` is added: records not used for
/// [`FORGET_AFTER`] go first, then the least recently used one.
fn make_room(map: &mut HashMap<String, Record>, key: &str, now: Instant) {
    if map.len() < MAX_ENTRIES || map.contains_key(key) {
        return;
    }
    map.retain(|_, r| now.saturating_duration_since(r.last) < FORGET_AFTER);
    if map.len() >= MAX_ENTRIES {
        if let Some(oldest) = map.iter().min_by_key(|(_, r)| r.last).map(|(k, _)| k.clone()) {
            map.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_guesses_wait_before_the_check() {
        let t = SignInThrottle::default();
        let now = Instant::now();
        assert!(t.begin("10.0.0.1", "admin", now).is_ok());
        // A second guess while the first is checked (or just failed): refused unchecked.
        let wait = t.begin("10.0.0.1", "admin", now).unwrap_err();
        assert_eq!(wait, FIRST_WAIT);
        // The same user name from another address: refused too.
        assert!(t.begin("10.0.0.2", "Admin", now).is_err());
        // Another user from another address is not slowed.
        assert!(t.begin("10.0.0.3", "ops", now).is_ok());
        // After the wait, one more attempt; the next wait doubles.
        let later = now + FIRST_WAIT;
        assert!(t.begin("10.0.0.1", "admin", later).is_ok());
        assert_eq!(t.begin("10.0.0.1", "admin", later).unwrap_err(), FIRST_WAIT * 2);
        // Waits stop growing at the cap.
        let mut at = later;
        for _ in 0..20 {
            at += MAX_WAIT;
            assert!(t.begin("10.0.0.1", "admin", at).is_ok());
        }
        assert_eq!(t.begin("10.0.0.1", "admin", at).unwrap_err(), MAX_WAIT);
        // A right password starts both over.
        t.succeeded("10.0.0.1", "admin");
        assert!(t.begin("10.0.0.1", "admin", at).is_ok());
    }

    #[test]
    fn the_table_is_bounded() {
        let t = SignInThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_ENTRIES + 500) {
            let _ = t.begin(&format!("2001:db8::{i:x}"), &format!("user{i}"), now + Duration::from_micros(i as u64));
        }
        assert_eq!(t.len(), 2 * MAX_ENTRIES);
        // The most recent are kept, the least recent went first.
        let newest = MAX_ENTRIES + 499;
        assert!(t.begin(&format!("2001:db8::{newest:x}"), "x", now + Duration::from_millis(100)).is_err());
        // Records idle for long are forgotten to make room.
        let much_later = now + FORGET_AFTER + Duration::from_secs(1);
        assert!(t.begin("192.0.2.1", "someone", much_later).is_ok());
        assert!(t.len() <= 4, "{}", t.len());
    }
}
