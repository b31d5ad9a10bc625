//! Resolving a config against its model: every stage's settings from the
//! config, then the model's metadata, then its shapes, checked together.

use tract_onnx::prelude::{Datum, DatumType};

use crate::config::{Config, ConfigProblem, Problems};
use crate::model::{InputPin, Model, ModelFile};
use crate::policy::Policy;
use crate::postprocess::Postprocess;
use crate::preprocess::Preprocess;
use crate::queue::QueueConfig;
use crate::schema::ModelTag;
use crate::window::Window;

/// Everything a config resolves to, checked against the model and ready to run.
#[derive(Debug)]
pub struct Prepared {
    /// The optimized model, input pinned to the window's shape.
    pub model: Model,
    /// The window stage.
    pub window: Window,
    /// The preprocess stage.
    pub preprocess: Preprocess,
    /// The postprocess stage.
    pub postprocess: Postprocess,
    /// The policy stage.
    pub policy: Policy,
    /// Class names, empty when unknown.
    pub labels: Vec<String>,
    /// Queue settings.
    pub queues: QueueConfig,
    /// Sequence number of the first result (continues an earlier run's).
    pub first_seq: u64,
    /// Names the model in result messages.
    pub tag: ModelTag,
}

impl Prepared {
    /// What `check --config` prints about the resolved stages.
    pub fn describe(&self) -> String {
        let w = &self.window;
        let mut s = format!(
            "  window: {} samples x {} channels, hop {}, layout {:?} → input {:?}\n  postprocess: {:?}\n",
            w.size(),
            w.channels(),
            w.hop(),
            w.layout(),
            w.shape(),
            self.postprocess
        );
        if !self.labels.is_empty() {
            s.push_str(&format!("  labels: {}\n", self.labels.join(", ")));
        }
        s
    }
}

/// Resolves `config` against `file`: window, preprocess and postprocess
/// settings (config first, then the model's metadata, then its input shape),
/// pins the model's input to the window and checks that everything fits.
/// `source_channels` is what the source knows of its channel count.
/// Every problem found is returned, not just the first.
pub fn prepare(
    config: &Config,
    file: &ModelFile,
    source_channels: Option<usize>,
) -> Result<Prepared, Vec<ConfigProblem>> {
    let model_problem = |message: String| ConfigProblem {
        file: file.origin().into(),
        field: "model".into(),
        message,
    };
    let input = match file.inputs() {
        [one] if one.dtype == f32::datum_type() => one.clone(),
        inputs => {
            let list: Vec<String> = inputs.iter().map(|i| i.to_string()).collect();
            return Err(vec![model_problem(format!(
                "expected one f32 input for the pipeline (use `edgeinfer infer` for others), found {}",
                if list.is_empty() { "none".into() } else { list.join(", ") }
            ))]);
        }
    };
    let mut p = Problems::new(&config.origin);
    let Some(window) = config.window.resolve(file, &input, source_channels, &mut p) else {
        return Err(p.into_vec());
    };
    let pin = InputPin {
        dtype: DatumType::F32,
        shape: window.shape(),
    };
    let model = file
        .load_threaded(Some(&[pin]), config.model.threads)
        .map_err(|e| vec![model_problem(e.to_string())])?;
    let info = model.info().clone();
    let preprocess = Preprocess::build(&config.preprocess, window.channels(), &info, &mut p);
    let outputs: usize = info
        .outputs
        .first()
        .map(|o| o.shape.iter().product())
        .unwrap_or(0);
    let input_len = window.size() * window.channels();
    let post = crate::postprocess::resolve(
        config.postprocess.as_ref(),
        file,
        outputs,
        input_len,
        &mut p,
    );
    match (preprocess, post) {
        (Some(preprocess), Some((postprocess, labels))) if p.is_empty() => Ok(Prepared {
            model,
            window,
            preprocess,
            postprocess,
            policy: Policy::new(&config.policy),
            labels,
            queues: config.pipeline.clone(),
            first_seq: 0,
            tag: ModelTag::new(&info.sha256, &model_version(file, &info.sha256)),
        }),
        _ => Err(p.into_vec()),
    }
}

/// A model's version: its `edgeinfer.version` metadata, else the start of
/// its sha256.
pub fn model_version(file: &ModelFile, sha256: &str) -> String {
    file.metadata(crate::model::meta::VERSION)
        .map(str::to_string)
        .unwrap_or_else(|| sha256.chars().take(12).collect())
}
