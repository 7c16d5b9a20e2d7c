//! The connect-time check of the server's `maxmemory-policy`.
//!
//! Redis evicts keys one at a time. A session is five keys, so eviction can
//! remove its messages and keep its header: the scripts then refuse the
//! torn session as corrupt (see `scripts.rs`) instead of serving half a
//! history, but the session is lost all the same. Which policies can do
//! that to this store's keys:
//!
//! | policy | evicts | safe |
//! |--------|--------|------|
//! | `noeviction` | nothing (writes fail with `OOM` when memory is full) | yes |
//! | `volatile-lru`, `volatile-lfu`, `volatile-random`, `volatile-ttl` | keys with a TTL | only without a store TTL |
//! | `allkeys-lru`, `allkeys-lfu`, `allkeys-random` | any key | no |

use crate::Error;

/// What [`RedisStoreBuilder::connect`](crate::RedisStoreBuilder::connect)
/// does when the server's `maxmemory-policy` may evict single keys of a
/// session (see the [crate docs](crate#eviction)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvictionPolicyCheck {
    /// Log a `tracing` warning and connect (the default).
    #[default]
    Warn,
    /// Fail with [`Error::UnsafeEvictionPolicy`].
    Refuse,
    /// Do not ask the server.
    Ignore,
}

/// Why `policy` is unsafe for a store with (`ttl`) or without a TTL, or
/// `None` when it is safe.
pub(crate) fn unsafe_reason(policy: &str, ttl: bool) -> Option<&'static str> {
    if policy.starts_with("allkeys-") {
        Some("it may evict any key, so single keys of a session")
    } else if policy.starts_with("volatile-") && ttl {
        Some("it may evict keys with a TTL, and every key of this store has one")
    } else {
        None
    }
}

/// Applies `check` to the policy the server reported (`None`: it could not
/// be read, for example because the ACL user may not run `CONFIG GET`).
pub(crate) fn apply(
    check: EvictionPolicyCheck,
    policy: Option<&str>,
    ttl: bool,
    address: &str,
) -> Result<(), Error> {
    let Some(policy) = policy else {
        return Ok(());
    };
    let Some(reason) = unsafe_reason(policy, ttl) else {
        return Ok(());
    };
    match check {
        EvictionPolicyCheck::Ignore => Ok(()),
        EvictionPolicyCheck::Warn => {
            tracing::warn!(
                address,
                policy,
                "Redis maxmemory-policy may evict part of a session ({reason}); such sessions \
                 then read as corrupt. Fix: CONFIG SET maxmemory-policy noeviction"
            );
            Ok(())
        }
        EvictionPolicyCheck::Refuse => Err(Error::UnsafeEvictionPolicy {
            address: address.to_owned(),
            policy: policy.to_owned(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_policies_that_can_reach_our_keys_are_unsafe() {
        for policy in ["noeviction", "something-new"] {
            assert_eq!(unsafe_reason(policy, true), None, "{policy}");
        }
        for policy in [
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
        ] {
            assert_eq!(unsafe_reason(policy, false), None, "{policy} without a TTL");
            assert!(unsafe_reason(policy, true).is_some(), "{policy} with a TTL");
        }
        for policy in ["allkeys-lru", "allkeys-lfu", "allkeys-random"] {
            assert!(unsafe_reason(policy, false).is_some(), "{policy}");
        }
    }

    #[test]
    fn refusing_names_the_policy_and_the_fix() {
        let err = apply(
            EvictionPolicyCheck::Refuse,
            Some("allkeys-lru"),
            false,
            "127.0.0.1:6379",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("allkeys-lru"), "{msg}");
        assert!(
            msg.contains("CONFIG SET maxmemory-policy noeviction"),
            "{msg}"
        );
        assert!(apply(EvictionPolicyCheck::Refuse, None, true, "a").is_ok());
        assert!(apply(EvictionPolicyCheck::Warn, Some("allkeys-lru"), true, "a").is_ok());
        assert!(apply(EvictionPolicyCheck::Ignore, Some("allkeys-lru"), true, "a").is_ok());
    }
}
