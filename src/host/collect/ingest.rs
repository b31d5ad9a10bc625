//! `edgeinfer-host collect`: every device's topics into the database, in
//! batched transactions, acknowledging each message only after the
//! transaction that holds it has committed.
//!
//! Delivery: QoS 1, a persistent session and manual acks. A message the
//! collector has not acknowledged stays with the broker, which sends it
//! again after a reconnect; a message it has acknowledged is committed.
//! So a killed collector or a database that goes away loses nothing, and
//! the redeliveries that follow are dropped by the `(device, seq)` key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, Packet, Publish, QoS, RecvTimeoutError};

use super::rows::{decode, known_infos, write, Item};
use super::store::{Store, StoreError};
use crate::host::listen::mqtt_options;
use crate::host::HostError;

/// What to collect and where.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// `mqtt://HOST[:PORT]`.
    pub broker: String,
    /// An SQLite file or a `postgres://` URL.
    pub db: String,
    /// Shared-subscription group: collectors in one group split the
    /// result, metrics and error messages between them.
    pub group: Option<String>,
    /// Filter of the result topics (`.../result`); the status, info,
    /// metrics and error topics beside them are collected too.
    pub topic: String,
    /// MQTT client id; it names the persistent session, so it must stay
    /// the same across restarts of one collector.
    pub client_id: Option<String>,
    /// Most messages in one transaction.
    pub max_batch: usize,
    /// Exit after storing this many new results (benchmarks, scripts).
    pub count: Option<u64>,
}

/// What one run of the collector did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CollectStats {
    /// Messages committed and acknowledged.
    pub messages: u64,
    /// Result records stored.
    pub results: u64,
    /// Result records dropped as already stored (QoS 1 redelivery).
    pub duplicates: u64,
    /// Payloads that could not be decoded (stored in `errors`).
    pub undecodable: u64,
    /// Transactions that failed (database down, locked or full): their
    /// messages were not acknowledged and came again.
    pub db_failures: u64,
    /// Transactions committed.
    pub transactions: u64,
}

/// The client id a collector uses when none is given: stable for one
/// machine and group, so a restarted collector finds its session.
pub fn default_client_id(group: Option<&str>) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    match group {
        Some(g) => format!("edgeinfer-collect-{g}-{host}"),
        None => format!("edgeinfer-collect-{host}"),
    }
}

/// The subscriptions: results, metrics and errors shared by the group;
/// status and info (retained, few) to every collector, because brokers
/// send no retained messages on shared subscriptions.
pub fn filters(topic: &str, group: Option<&str>) -> Result<Vec<String>, HostError> {
    let prefix = topic.strip_suffix("/result").ok_or_else(|| {
        HostError::Usage(format!(
            "--topic {topic}: expected a filter of result topics, ending in /result"
        ))
    })?;
    let shared = |kind: &str| match group {
        Some(g) => format!("$share/{g}/{prefix}/{kind}"),
        None => format!("{prefix}/{kind}"),
    };
    Ok(vec![
        shared("result"),
        shared("metrics"),
        shared("error"),
        format!("{prefix}/status"),
        format!("{prefix}/info"),
    ])
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for
/// messages and logs.
pub fn display_db(db: &str) -> String {
    if let Some((scheme, rest)) = db.split_once("://") {
        if let Some((cred, host)) = rest.rsplit_once('@') {
            if let Some((user, _)) = cred.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    db.to_string()
}

/// Why one session with the broker and the database ended.
enum End {
    /// Stop was asked for, or the count was reached.
    Done,
    /// The database failed; its messages were not acknowledged.
    Database(StoreError),
}

/// Runs the collector until `stop` (or `count`). The database must open
/// at the start; afterwards a database that fails is retried with
/// backoff, and nothing is acknowledged until it commits again.
pub fn collect(opts: &CollectOptions, stop: &AtomicBool) -> Result<CollectStats, HostError> {
    let filters = filters(&opts.topic, opts.group.as_deref())?;
    let id = opts
        .client_id
        .clone()
        .unwrap_or_else(|| default_client_id(opts.group.as_deref()));
    let store_err = |error| HostError::Store {
        db: display_db(&opts.db),
        error,
    };
    let mut store = Some(Store::open(&opts.db).map_err(store_err)?);
    eprintln!(
        "collecting into {} ({}), client id {id}",
        display_db(&opts.db),
        store.as_ref().map_or("", Store::engine)
    );
    let mut stats = CollectStats::default();
    let mut backoff = Duration::from_millis(250);
    while !stop.load(Ordering::Relaxed) {
        let mut s = match store.take() {
            Some(s) => s,
            None => match Store::open(&opts.db) {
                Ok(s) => {
                    eprintln!("database back: catching up");
                    s
                }
                Err(e) if e.is_transient() => {
                    log::warn!("database still unavailable: {e}");
                    sleep_unless(stop, backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(e) => return Err(store_err(e)),
            },
        };
        match session(opts, &id, &filters, &mut s, &mut stats, stop)? {
            End::Done => break,
            End::Database(e) => {
                stats.db_failures += 1;
                if !e.is_transient() {
                    return Err(store_err(e));
                }
                eprintln!(
                    "edgeinfer-host: warning: database write failed ({e}); not acknowledging, retrying in {:.1} s",
                    backoff.as_secs_f64()
                );
                drop(s);
                sleep_unless(stop, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        if stats.transactions > 0 {
            backoff = Duration::from_millis(250);
        }
    }
    Ok(stats)
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One MQTT connection over one open database.
fn session(
    opts: &CollectOptions,
    id: &str,
    filters: &[String],
    store: &mut Store,
    stats: &mut CollectStats,
    stop: &AtomicBool,
) -> Result<End, HostError> {
    let mut infos = match known_infos(store) {
        Ok(i) => i,
        Err(e) => return Ok(End::Database(e)),
    };
    let mut mo = mqtt_options(&opts.broker, id.to_string())?;
    mo.set_clean_session(false);
    mo.set_manual_acks(true);
    // Room for a whole transaction's acks at once.
    let (client, mut conn) = Client::new(mo, 2 * opts.max_batch + 16);
    let mut pending: Vec<Publish> = Vec::new();
    // Messages that arrived while acks were being handed over: the next
    // transaction's.
    let mut early: Vec<Publish> = Vec::new();
    let mut subscribed = 0;
    let mut connected = false;
    let mut last_error = String::new();
    let end = loop {
        if stop.load(Ordering::Relaxed) {
            break End::Done;
        }
        if opts.count.is_some_and(|n| stats.results >= n) {
            break End::Done;
        }
        pending.append(&mut early);
        // Block for the first message, then take whatever else is ready:
        // a busy fleet fills a transaction, a quiet one is not delayed.
        let mut next = if !connected {
            // rumqttc connects inside the future this drops on timeout: a
            // short wait would abort every handshake slower than itself.
            // Its own connection timeout (5 s) bounds the wait.
            conn.recv_timeout(Duration::from_secs(30))
        } else if pending.is_empty() {
            conn.recv_timeout(Duration::from_millis(100))
        } else {
            try_recv(&mut conn)
        };
        loop {
            match next {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => pending.push(p),
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    connected = true;
                    subscribed = 0;
                    last_error.clear();
                    for f in filters {
                        client
                            .try_subscribe(f.clone(), QoS::AtLeastOnce)
                            .map_err(|e| HostError::Mqtt(e.to_string()))?;
                    }
                }
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                    subscribed += 1;
                    if subscribed == filters.len() {
                        // Scripts and tests wait for this line.
                        eprintln!("subscribed to {}", filters.join(" "));
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    let e = e.to_string();
                    if e != last_error {
                        eprintln!("edgeinfer-host: warning: broker: {e}; reconnecting");
                        last_error = e;
                    }
                    // Not stored, not acknowledged: the broker sends them
                    // again on the next connection, under packet ids that
                    // acks from this one must not hit.
                    pending.clear();
                    early.clear();
                    connected = false;
                    std::thread::sleep(Duration::from_millis(200));
                    break;
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return Ok(End::Done),
            }
            if pending.len() >= opts.max_batch {
                break;
            }
            next = try_recv(&mut conn);
        }
        if pending.is_empty() {
            continue;
        }
        let items: Vec<(Item, bool)> = pending.iter().map(|p| (decode(p), p.retain)).collect();
        let undecodable = items
            .iter()
            .filter(|(i, _)| {
                matches!(
                    i,
                    Item::Error {
                        source: "collector",
                        ..
                    }
                )
            })
            .count() as u64;
        match write(store, &items, &mut infos) {
            Ok((fresh, dup)) => {
                ack(&client, &mut conn, pending.drain(..), &mut early);
                stats.messages += items.len() as u64;
                stats.results += fresh;
                stats.duplicates += dup;
                stats.undecodable += undecodable;
                stats.transactions += 1;
                if undecodable > 0 {
                    log::warn!("{undecodable} undecodable payloads stored in errors");
                }
            }
            Err(e) => {
                // Dropping the connection without acks: the broker keeps
                // these messages for this client id and sends them again.
                break End::Database(e);
            }
        }
    };
    if matches!(end, End::Done) {
        let _ = client.disconnect();
        // Let the acks and the DISCONNECT reach the broker before the
        // socket closes.
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            match conn.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Err(_) | Ok(Err(_)) => {
                    break
                }
                _ => {}
            }
        }
    }
    Ok(end)
}

/// The next event if one is ready, as `recv_timeout` would give it.
fn try_recv(
    conn: &mut rumqttc::Connection,
) -> Result<Result<Event, rumqttc::ConnectionError>, RecvTimeoutError> {
    match conn.try_recv() {
        Ok(e) => Ok(e),
        Err(rumqttc::TryRecvError::Empty) => Err(RecvTimeoutError::Timeout),
        Err(rumqttc::TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
    }
}

/// Hands every ack to the event loop. An ack that is never sent holds a
/// place in the broker's in-flight window for good, and once the window is
/// full of them the broker sends nothing more; so when the request queue
/// is full, the connection is driven (sending acks) until there is room.
/// Acks lost with the connection do no harm: the broker sends those
/// messages again and the key drops them.
fn ack(
    client: &Client,
    conn: &mut rumqttc::Connection,
    done: impl Iterator<Item = Publish>,
    early: &mut Vec<Publish>,
) {
    for p in done {
        while client.try_ack(&p).is_err() {
            match conn.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(Event::Incoming(Packet::Publish(q)))) => early.push(q),
                Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
                Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_filters_leave_retained_topics_unshared() {
        assert_eq!(
            filters("edgeinfer/+/result", Some("g1")).unwrap(),
            vec![
                "$share/g1/edgeinfer/+/result",
                "$share/g1/edgeinfer/+/metrics",
                "$share/g1/edgeinfer/+/error",
                "edgeinfer/+/status",
                "edgeinfer/+/info",
            ]
        );
        assert_eq!(filters("a/+/result", None).unwrap()[0], "a/+/result");
        assert!(filters("a/#", None).is_err());
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            display_db("postgres://me:secret@db:5432/x"),
            "postgres://me:***@db:5432/x"
        );
        assert_eq!(display_db("/var/lib/c.sqlite"), "/var/lib/c.sqlite");
    }
}
