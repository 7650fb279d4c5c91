//! Counts kept in Redis and shared by every gateway node. One Lua script per request reads every
//! window's count and increments them only when all have room, atomically, so N nodes admit
//! exactly the limit. Keys carry a hash tag (`{…}`) so a key's windows stay on one Redis Cluster
//! slot, and expire with their window.
//!
//! Each worker thread keeps its own multiplexed connection per Redis URL (no lock, no
//! cross-thread hop); redis-rs's `ConnectionManager` reconnects it after a failure. While Redis
//! cannot be reached, new connection attempts are made at most once per second, so requests do
//! not each wait for a connect timeout.

use super::{Store, Verdict, Window};
use meshgate_core::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Check all windows, then count in all of them, or in none.
const SCRIPT: &str = r"
local n = #KEYS
local counts = {}
for i = 1, n do
  counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
end
for i = 1, n do
  if counts[i] >= tonumber(ARGV[i]) then
    table.insert(counts, 1, 0)
    return counts
  end
end
for i = 1, n do
  counts[i] = redis.call('INCR', KEYS[i])
  if counts[i] == 1 then
    redis.call('EXPIRE', KEYS[i], ARGV[n + i])
  end
end
table.insert(counts, 1, 1)
return counts
";

/// How long to wait before trying to connect again after a failed attempt.
const RECONNECT_FLOOR: Duration = Duration::from_secs(1);

/// A per-thread connection, or when the last attempt to make one failed.
#[derive(Clone)]
enum Conn {
    Ready(ConnectionManager),
    Failed(Instant),
}

thread_local! {
    static CONNS: RefCell<HashMap<String, Conn>> = RefCell::new(HashMap::new());
}

/// Counts in Redis.
pub(crate) struct RedisStore {
    client: redis::Client,
    /// Identifies the server in the per-thread connection table (the URL, which may hold a
    /// password, never leaves the process).
    id: String,
    timeout: Duration,
    prefix: String,
    script: redis::Script,
}

impl RedisStore {
    /// A store for `url`; no connection is made until the first request.
    pub(crate) fn new(url: &str, timeout: Duration, prefix: String) -> Result<RedisStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("not a valid Redis URL: {e}"))?;
        Ok(RedisStore { client, id: url.to_owned(), timeout, prefix, script: redis::Script::new(SCRIPT) })
    }

    async fn connection(&self) -> Result<ConnectionManager, String> {
        match CONNS.with_borrow(|c| c.get(&self.id).cloned()) {
            Some(Conn::Ready(c)) => return Ok(c),
            Some(Conn::Failed(at)) if at.elapsed() < RECONNECT_FLOOR => {
                return Err("Redis unreachable (retrying shortly)".to_owned());
            }
            _ => {}
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let made = tokio::time::timeout(self.timeout, ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .map_err(|_| "connecting to Redis timed out".to_owned())
            .and_then(|r| r.map_err(|e| format!("connecting to Redis: {e}")));
        let entry = match &made {
            Ok(c) => Conn::Ready(c.clone()),
            Err(_) => Conn::Failed(Instant::now()),
        };
        CONNS.with_borrow_mut(|c| c.insert(self.id.clone(), entry));
        made
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn hit(&self, key: &str, windows: &[Window], now: u64) -> Result<Verdict, String> {
        let mut conn = self.connection().await?;
        let mut call = self.script.prepare_invoke();
        for w in windows {
            call.key(format!("{}:{{{key}}}:{}:{}", self.prefix, w.name, w.index(now)));
        }
        for w in windows {
            call.arg(w.limit);
        }
        for w in windows {
            call.arg(w.seconds);
        }
        let reply: Vec<u64> = tokio::time::timeout(self.timeout, call.invoke_async(&mut conn))
            .await
            .map_err(|_| "Redis did not answer in time".to_owned())?
            .map_err(|e| format!("Redis: {e}"))?;
        match reply.split_first() {
            Some((admitted, counts)) if counts.len() == windows.len() => {
                Ok(Verdict { admitted: *admitted == 1, counts: counts.into() })
            }
            _ => Err(format!("unexpected reply from the rate-limit script: {reply:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smallvec::smallvec;

    /// The machine's Redis (CI and dev machines run one on 127.0.0.1:6379).
    fn store(prefix: &str) -> RedisStore {
        RedisStore::new("redis://127.0.0.1:6379", Duration::from_secs(2), prefix.to_owned()).unwrap()
    }

    #[tokio::test]
    async fn atomic_windows_in_real_redis() {
        let prefix = format!("meshgate-test:{}:{}", std::process::id(), rand::random::<u32>());
        let s = store(&prefix);
        let w = [Window { name: "hour", seconds: 3600, limit: 2 }, Window { name: "day", seconds: 86_400, limit: 3 }];
        let now = 1_000_000 * 86_400;
        assert_eq!(s.hit("k", &w, now).await.unwrap(), Verdict { admitted: true, counts: smallvec![1, 1] });
        assert_eq!(s.hit("k", &w, now).await.unwrap(), Verdict { admitted: true, counts: smallvec![2, 2] });
        assert_eq!(s.hit("k", &w, now).await.unwrap(), Verdict { admitted: false, counts: smallvec![2, 2] });
        assert_eq!(s.hit("k", &w, now + 3600).await.unwrap(), Verdict { admitted: true, counts: smallvec![1, 3] });
        assert_eq!(s.hit("k", &w, now + 3600).await.unwrap(), Verdict { admitted: false, counts: smallvec![1, 3] });
    }

    #[tokio::test]
    async fn unreachable_redis_fails_fast() {
        // Port 9 (discard) is closed on test machines: the connection is refused.
        let s = RedisStore::new("redis://127.0.0.1:9", Duration::from_millis(200), "x".into()).unwrap();
        let w = [Window { name: "second", seconds: 1, limit: 1 }];
        let t = Instant::now();
        assert!(s.hit("k", &w, 0).await.is_err());
        // The second attempt within the floor does not even try.
        assert!(s.hit("k", &w, 0).await.unwrap_err().contains("retrying shortly"));
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
}
