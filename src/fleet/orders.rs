//! Orders from `<prefix>/cmd`: the signature, the device, the replay
//! window, then the command (an update's manifest goes to `apply.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::controller::{Kind, Worker};
use super::wire::{Action, Order, Signed};
use crate::clock::now_ms;
use crate::config::{Config, SinkConfig};
use crate::pipeline::swap::Change;

impl Worker {
    pub(super) fn on_order(&mut self, payload: &[u8]) {
        if self.setup.remote.is_none() {
            return;
        }
        let order =
            match Order::verify(payload, self.setup.key.as_ref(), self.remote.allow_unsigned) {
                Ok(o) => o,
                Err(e) => {
                    // The id, read without trusting it, lets the sender match
                    // the refusal to what it sent.
                    let id = postcard::from_bytes::<Signed>(payload)
                        .ok()
                        .and_then(|s| postcard::from_bytes::<Order>(&s.body).ok())
                        .map(|o| o.id)
                        .unwrap_or_default();
                    self.refuse(&id, e.to_string());
                    return;
                }
            };
        if order.device != self.device() {
            self.refuse(
                &order.id,
                format!(
                    "signed for device {:?}, this is {:?}",
                    order.device,
                    self.device()
                ),
            );
            return;
        }
        if let Err(why) = self.check_replay(&order) {
            self.refuse(&order.id, why);
            return;
        }
        let id = order.id.clone();
        match order.action {
            Action::Ping => self.send_reply(self.reply(&id, "ok", "pong".into())),
            Action::Info => {
                let mut r = self.reply(&id, "ok", "info".into());
                r.data = self.shared.as_ref().and_then(|s| {
                    serde_json::from_str(&s.info.lock().unwrap_or_else(|e| e.into_inner())).ok()
                });
                self.send_reply(r);
            }
            Action::Set { key, value } => self.set(&id, &key, &value),
            Action::Rollback => self.rollback(&id),
            Action::Restart => {
                self.send_reply(self.reply(&id, "ok", "restarting".into()));
                self.restart.store(true, Ordering::Relaxed);
                self.stop.store(true, Ordering::Relaxed);
            }
            Action::Update(manifest) => self.start_update(&id, manifest),
        }
    }

    /// Refuses orders signed too long ago (or ahead), and any order whose
    /// nonce was already seen within the window.
    fn check_replay(&mut self, order: &Order) -> Result<(), String> {
        let now = now_ms();
        let window_ms = self.remote.order_window_s.saturating_mul(1000);
        // Wide enough for any two u64 times: no overflow, whatever was signed.
        let age = i128::from(now) - i128::from(order.ts_ms);
        if age.unsigned_abs() > u128::from(window_ms) {
            return Err(format!(
                "expired: signed {:.0} s {} the device's clock, the window is {} s",
                age.unsigned_abs() as f64 / 1000.0,
                if age >= 0 { "before" } else { "ahead of" },
                self.remote.order_window_s
            ));
        }
        self.nonces.retain(|(ts, _)| {
            now.saturating_sub(*ts) <= window_ms && *ts <= now.saturating_add(window_ms)
        });
        if self.nonces.iter().any(|(_, n)| *n == order.nonce) {
            return Err("replayed: this order was already carried out".into());
        }
        self.nonces.push((order.ts_ms, order.nonce));
        if let Some(store) = &self.setup.store {
            // Saved before acting: a restart must not make an order new again.
            if let Err(e) = store.set_nonces(&self.nonces) {
                return Err(format!("cannot record the order's nonce: {e}"));
            }
        }
        Ok(())
    }

    fn set(&mut self, id: &str, key: &str, value: &str) {
        if key == "log_level" {
            let Ok(level) = value.trim_matches('"').parse::<log::LevelFilter>() else {
                self.refuse(
                    id,
                    format!(
                        "log_level: expected off, error, warn, info, debug or trace, found {value}"
                    ),
                );
                return;
            };
            log::set_max_level(level);
        } else {
            let config = match self.setup.config.with_setting(key, value) {
                Ok(c) => c,
                Err(why) => {
                    self.refuse(id, why);
                    return;
                }
            };
            let batching = config.sink.iter().find_map(|s| match s {
                SinkConfig::Mqtt(m) => Some(m.clone()),
                _ => None,
            });
            self.setup.control.send(Change::Settings {
                policy: config.policy.clone(),
                batching,
            });
            self.setup.config = config;
        }
        if let Some(store) = &self.setup.store {
            let mut settings = store.settings();
            settings.insert(key.into(), value.into());
            if let Err(e) = store.set_settings(&settings) {
                self.refuse(
                    id,
                    format!("applied, but not saved for the next start: {e}"),
                );
                return;
            }
        }
        self.send_reply(self.reply(id, "ok", format!("{key} = {value}")));
    }

    pub(super) fn rollback(&mut self, id: &str) {
        let (Some(store), Some(prev)) = (self.setup.store.clone(), self.setup.previous.clone())
        else {
            self.refuse(id, "no previous model to go back to");
            return;
        };
        if self.pending.is_some() || self.probation.is_some() {
            self.refuse(id, "an update is being applied; try again when it is done");
            return;
        }
        let staged = store
            .read_model(&prev)
            .and_then(|file| self.stage(&file, &prev, None));
        match staged {
            Ok(s) => self.swap(id, Kind::Rollback, prev, s),
            Err(why) => self.refuse(id, format!("the previous model cannot run: {why}")),
        }
    }
}

/// Applies saved `set` settings to a config at start.
pub fn apply_settings(config: &Config, settings: &BTreeMap<String, String>) -> Config {
    let mut out = config.clone();
    for (k, v) in settings {
        if k == "log_level" {
            if let Ok(level) = v.trim_matches('"').parse::<log::LevelFilter>() {
                log::set_max_level(level);
            }
            continue;
        }
        match out.with_setting(k, v) {
            Ok(c) => out = c,
            Err(why) => log::warn!("saved setting {k} = {v} ignored: {why}"),
        }
    }
    out
}
