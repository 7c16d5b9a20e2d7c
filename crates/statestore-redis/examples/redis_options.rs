//! The seed's "With Authentication and Options": credentials come in the
//! URL (`redis://user:password@host:port/db`, or `rediss://` for TLS with
//! feature `tls`), TTL and prefix are options. The password never appears
//! in errors or in the store's `Debug` output.
//!
//! ```text
//! REDIS_URL=redis://app:secret@127.0.0.1:6379/0 \
//!   cargo run -p statestore-redis --example redis_options
//! ```
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example prints"
)]

use std::time::Duration;

use statestore_core::{Expect, Message, SessionId, Store};
use statestore_redis::RedisStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("set REDIS_URL, e.g. redis://user:password@127.0.0.1:6379/0");
        std::process::exit(2);
    };
    let store = RedisStore::builder()
        .ttl(Duration::from_secs(24 * 3600)) // WithTTL(24h): every key of a session, atomically
        .prefix(format!("myapp-{}:", std::process::id())) // WithPrefix("myapp:")
        .response_timeout(Duration::from_secs(2))
        .connect(&url)
        .await?;
    println!("{store:?}");

    let id = SessionId::new("user-123-support")?;
    let v = store
        .append(&id, vec![Message::user("My order is late")], Expect::Absent)
        .await?;
    println!("created {id} at version {v}; it expires after 24 h without access");

    // Writes carry the version they expect: a stale one is refused, not applied.
    let stale = store
        .append(&id, vec![Message::user("stale")], Expect::Version(v - 1))
        .await;
    match &stale {
        Err(e) => println!("stale write refused: {e}"),
        Ok(v) => println!("stale write applied at version {v}?!"),
    }
    assert!(stale.is_err());
    store.delete(&id).await?;
    Ok(())
}
