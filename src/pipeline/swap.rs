//! Changing a running pipeline: another model (an update, a rollback, a
//! reload) or other policy and batching settings (a remote `set`).
//!
//! Whoever prepares the change (the fleet controller) loads and checks
//! the new stages on its own thread; the pipeline thread only swaps them
//! in between two inferences, so no sample is lost and no result comes
//! from a half-loaded model. A model swapped in "on probation" must give
//! one good output (no error, all values finite) before it fails
//! `rollback_after` times in a row, or the pipeline goes back to the
//! stages it replaced, which it keeps until then.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Mutex;

use crate::model::Model;
use crate::policy::PolicyConfig;
use crate::postprocess::Postprocess;
use crate::preprocess::Preprocess;
use crate::schema::ModelTag;
use crate::sink::MqttSinkConfig;

/// The stages that come with a model, swapped together.
#[derive(Debug)]
pub struct Stages {
    /// The optimized model.
    pub model: Model,
    /// Its preprocessing (scaling may come from its metadata).
    pub preprocess: Preprocess,
    /// Its image stage, when the source yields images.
    pub image: Option<crate::image::ImagePrep>,
    /// Its postprocessing.
    pub postprocess: Postprocess,
    /// Its class names.
    pub labels: Vec<String>,
    /// Names it in result messages.
    pub tag: ModelTag,
}

/// A change for the pipeline thread.
#[derive(Debug)]
pub enum Change {
    /// Run these stages from the next sample on.
    Swap {
        /// The order that asked for it.
        id: String,
        /// The new stages.
        stages: Box<Stages>,
        /// Keep the old stages until the new ones give a good output.
        probation: bool,
    },
    /// New policy and batching settings.
    Settings {
        /// The policy.
        policy: PolicyConfig,
        /// The `mqtt` sink's batching, when results go to MQTT.
        batching: Option<MqttSinkConfig>,
    },
}

/// What the pipeline thread did with a change.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The stages of order `id` run now.
    Swapped(String),
    /// The model of order `id` gave its first good output.
    Confirmed(String),
    /// The model of order `id` failed; the stages before it run again.
    RolledBack {
        /// The order.
        id: String,
        /// Its last failure.
        reason: String,
    },
}

/// The hand-off between the fleet controller and the pipeline thread.
#[derive(Debug)]
pub struct Control {
    changes: Mutex<VecDeque<Change>>,
    pending: AtomicBool,
    events: Mutex<Option<Sender<Event>>>,
    /// Failed inferences in a row that roll a model on probation back.
    pub rollback_after: u32,
    /// Stages on probation from the start (an update interrupted after its
    /// swap): (order id, the stages to go back to).
    pub initial_probation: Mutex<Option<(String, Box<Stages>)>>,
}

impl Control {
    /// A hand-off that sends the pipeline's events to `events`.
    pub fn new(rollback_after: u32, events: Sender<Event>) -> Self {
        Control {
            changes: Mutex::default(),
            pending: AtomicBool::new(false),
            events: Mutex::new(Some(events)),
            rollback_after: rollback_after.max(1),
            initial_probation: Mutex::new(None),
        }
    }

    /// Queues a change; the pipeline applies it before its next sample.
    pub fn send(&self, change: Change) {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(change);
        self.pending.store(true, Ordering::Release);
    }

    /// The queued changes (cheap when there are none).
    pub(crate) fn take(&self) -> Vec<Change> {
        if !self.pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    /// Tells the controller.
    pub(crate) fn event(&self, event: Event) {
        if let Some(tx) = &*self.events.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = tx.send(event);
        }
    }
}
