//! Running a fleet: signed model updates with rollback, remote commands,
//! hot reload and Home Assistant discovery, all through the broker the
//! device already talks to.
//!
//! - `wire.rs`: orders, chunks, replies; Ed25519 keys and signatures;
//! - `store.rs`: the state directory (models, which one runs, the update
//!   journal, settings, seen nonces), written so power loss is harmless;
//! - `update.rs`: receiving and verifying an update's chunks;
//! - `controller.rs`: the thread that carries orders out and hands new
//!   stages to the pipeline (`pipeline::swap`); `orders.rs` and
//!   `apply.rs` hold what it does with commands and with models;
//! - `homeassistant.rs`: discovery configs and the JSON state topic;
//! - `remote.rs`: `[remote]`;
//! - `startup.rs`: the model a device starts with after whatever happened.

mod apply;
pub mod controller;
pub mod homeassistant;
pub mod orders;
pub mod remote;
pub mod startup;
pub mod store;
pub mod update;
pub mod wire;

pub use apply::reference_pair;
pub use controller::{discovery_messages, Controller, FleetSetup};
pub use homeassistant::HomeAssistantConfig;
pub use orders::apply_settings;
pub use remote::RemoteConfig;
pub use startup::{startup, Startup};
pub use store::{Current, Entry, Journal, Phase, Store};
