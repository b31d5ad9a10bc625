//! What the network thread shares with the rest of the process: the
//! outbox, the connection state, counters, and the messages other parts
//! queue for it to publish (error reports, replies, info, discovery).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::clock::now_ms;
use crate::outbox::Outbox;

/// Link counters, for the metrics topic.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Result messages acknowledged by the broker.
    pub acked: AtomicU64,
    /// Result messages published (including republished ones).
    pub published: AtomicU64,
    /// Bytes of result payloads published.
    pub bytes_published: AtomicU64,
    /// Sensor payload bytes received.
    pub bytes_in: AtomicU64,
    /// Sensor payloads that did not decode (counted by the source).
    pub bad_payloads: AtomicU64,
    /// Sensor messages dropped because the source's queue was full.
    pub input_dropped: AtomicU64,
    /// Sensor messages handed to the source's queue.
    pub input_queued: AtomicU64,
    /// Sensor messages the source took from its queue.
    pub input_taken: AtomicU64,
    /// Successful connections.
    pub connects: AtomicU64,
    /// Connections given up because the broker stopped answering.
    pub link_timeouts: AtomicU64,
    /// Publish-to-PUBACK latencies in microseconds, recent ones.
    pub ack_latency_us: Mutex<VecDeque<u64>>,
}

impl LinkCounters {
    /// Counts a sensor payload that did not decode.
    pub fn bump_bad_payloads(&self) {
        self.bad_payloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a sensor message the source took from its queue.
    pub fn bump_taken(&self) {
        self.input_taken.fetch_add(1, Ordering::Relaxed);
    }

    /// Sensor messages that never reached the pipeline: dropped at a full
    /// queue, plus (once the source has stopped) those left in it.
    pub fn input_lost(&self) -> u64 {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        get(&self.input_dropped) + get(&self.input_queued).saturating_sub(get(&self.input_taken))
    }
}

/// State shared between the network thread and its users.
#[derive(Debug)]
pub struct Shared {
    /// Messages awaiting acknowledgement.
    pub outbox: Mutex<Outbox>,
    /// True while connected.
    pub connected: AtomicBool,
    /// Raised to shut the link down.
    pub closing: AtomicBool,
    /// Counters.
    pub counters: LinkCounters,
    /// Extra fields for the metrics message, set by the pipeline.
    pub metrics: Mutex<serde_json::Map<String, serde_json::Value>>,
    /// Error reports to publish on `<prefix>/error`.
    pub errors: Mutex<VecDeque<String>>,
    /// Other messages to publish at QoS 1 once connected: (topic, payload,
    /// retained), oldest first (replies, discovery, state).
    pub outgoing: Mutex<VecDeque<(String, Vec<u8>, bool)>>,
    /// The retained `<prefix>/info` document, published at every connect.
    pub info: Mutex<String>,
    /// Retained messages published at every connect after `info` (Home
    /// Assistant discovery).
    pub announce: Mutex<Vec<(String, Vec<u8>)>>,
    /// Fields added to every metrics message (the running model).
    pub extra_metrics: Mutex<serde_json::Map<String, serde_json::Value>>,
}

impl Shared {
    /// Locks the outbox (a poisoned lock still holds consistent data).
    pub fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message for `topic` at QoS 1 (sent once connected).
    pub fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        let mut q = self.outgoing.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() < 10_000 {
            q.push_back((topic.to_string(), payload, retain));
        }
    }

    /// Replaces the info document and publishes it.
    pub fn set_info(&self, info: String, topic: &str) {
        *self.info.lock().unwrap_or_else(|e| e.into_inner()) = info.clone();
        self.publish(topic, info.into_bytes(), true);
    }

    /// Queues a JSON error report for `<prefix>/error`.
    pub fn report_error(&self, reason: &str) {
        let mut q = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() < 1000 {
            q.push_back(serde_json::json!({ "ts_ms": now_ms(), "reason": reason }).to_string());
        }
    }
}
