//! edgeinfer: run ONNX models on Raspberry Pi-class boards next to the
//! sensors, and send only compact results over the network.
//!
//! The data path, one module per stage:
//!
//! ```text
//! source ─► window ─► preprocess ─► model ─► postprocess ─► policy ─► sink
//! ```
//!
//! [`config::Config`] describes a pipeline in TOML; [`pipeline::build`] turns
//! it into running threads. [`schema`] holds the wire types a subscriber
//! decodes, and [`export`] writes ONNX models (the shipped ones are made
//! with it).

#![warn(missing_docs)]

pub mod broker;
pub mod clock;
pub mod config;
pub mod export;
pub mod fleet;
#[cfg(feature = "host")]
pub mod host;
pub mod image;
pub mod infer;
pub mod model;
pub mod mqtt;
pub mod npy;
pub mod outbox;
pub mod pipeline;
pub mod policy;
pub mod postprocess;
pub mod preprocess;
pub mod problem;
pub mod profile;
pub mod queue;
pub mod rng;
pub mod schema;
pub mod sink;
pub mod source;
pub mod stats;
pub mod window;

pub use config::Config;
pub use model::{Model, ModelFile, ModelInfo};
pub use pipeline::{build, prepare, Prepared, RunOptions, Summary};
pub use schema::{Prediction, ResultBatch, ResultRecord};

/// The shipped demo, built into the binary so that `edgeinfer` with no
/// arguments runs anywhere, with no files beside it.
pub mod demo {
    /// `examples/demo.toml`.
    pub const CONFIG: &str = include_str!("../examples/demo.toml");
    /// `models/demo/model.onnx`.
    pub const MODEL: &[u8] = include_bytes!("../models/demo/model.onnx");
    /// How the embedded model is named in messages.
    pub const MODEL_NAME: &str = "embedded:models/demo/model.onnx";

    /// The demo config, parsed.
    pub fn config() -> crate::Config {
        crate::Config::parse(
            CONFIG,
            "embedded:examples/demo.toml",
            std::path::Path::new("."),
        )
        .expect("the shipped demo config is valid (tested)")
    }
}
