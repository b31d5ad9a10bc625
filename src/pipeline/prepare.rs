//! Resolving a config against its model: every stage's settings from the
//! config, then the model's metadata, then its shapes, checked together.

use tract_onnx::prelude::{Datum, DatumType};

use crate::config::{Config, ConfigProblem, Problems};
use crate::image::{ImageConfig, ImagePrep, IMAGE_META};
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
    /// The window stage (a single value for image models, whose input is
    /// the image stage's).
    pub window: Window,
    /// The image stage, when the source yields images.
    pub image: Option<ImagePrep>,
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
    /// The model's input shape: the image stage's, else the window's.
    pub fn input_shape(&self) -> Vec<usize> {
        match &self.image {
            Some(i) => i.shape(),
            None => self.window.shape(),
        }
    }

    /// What `check --config` prints about the resolved stages.
    pub fn describe(&self) -> String {
        let w = &self.window;
        if let Some(i) = &self.image {
            let mut s = format!(
                "  image: {} → input {:?}\n  postprocess: {:?}\n",
                i.config.to_metadata(),
                i.shape(),
                self.postprocess
            );
            if !self.labels.is_empty() {
                s.push_str(&format!("  labels: {}\n", self.labels.join(", ")));
            }
            return s;
        }
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
    prepare_for(config, file, source_channels, config.source.images())
}

/// [`prepare`] for images (`images`: an image stage instead of a window)
/// whatever the config's source is: for `infer --image`.
pub fn prepare_for(
    config: &Config,
    file: &ModelFile,
    source_channels: Option<usize>,
    images: bool,
) -> Result<Prepared, Vec<ConfigProblem>> {
    let model_problem = |message: String| ConfigProblem {
        file: file.origin().into(),
        field: "model".into(),
        message,
    };
    let input = match file.inputs() {
        [one] if one.dtype == f32::datum_type() || (images && one.dtype == u8::datum_type()) => {
            one.clone()
        }
        inputs => {
            let list: Vec<String> = inputs.iter().map(|i| i.to_string()).collect();
            return Err(vec![model_problem(format!(
                "expected one f32 input for the pipeline (use `edgeinfer infer` for others), found {}",
                if list.is_empty() { "none".into() } else { list.join(", ") }
            ))]);
        }
    };
    let mut p = Problems::new(&config.origin);
    let (window, image) = if images {
        p.check(config.preprocess.is_empty(), "preprocess", || {
            "expected no [[preprocess]] steps with an image source (images are scaled by [image])"
                .into()
        });
        p.check(
            config.window == crate::window::WindowConfig::default(),
            "window",
            || "expected no [window] with an image source (one image is one input)".into(),
        );
        let Some(image) = image_stage(config, file, &input, &mut p) else {
            return Err(p.into_vec());
        };
        (
            Window::new(1, 1, 1, crate::window::Layout::Flat),
            Some(image),
        )
    } else {
        let Some(window) = config.window.resolve(file, &input, source_channels, &mut p) else {
            return Err(p.into_vec());
        };
        (window, None)
    };
    let pin = match &image {
        Some(i) => InputPin {
            dtype: if i.is_u8() {
                DatumType::U8
            } else {
                DatumType::F32
            },
            shape: i.shape(),
        },
        None => InputPin {
            dtype: DatumType::F32,
            shape: window.shape(),
        },
    };
    let model = file
        .load_with(Some(&[pin]), config.model.threads, config.model.conv_layout)
        .map_err(|e| vec![model_problem(e.to_string())])?;
    let info = model.info().clone();
    let preprocess = Preprocess::build(&config.preprocess, window.channels(), &info, &mut p);
    let output_shapes: Vec<Vec<usize>> = info.outputs.iter().map(|o| o.shape.clone()).collect();
    let input_len = match &image {
        Some(i) => i.shape().iter().product(),
        None => window.size() * window.channels(),
    };
    let image_size = image
        .as_ref()
        .and_then(|i| i.config.size)
        .map(|[w, h]| (w, h));
    let post = crate::postprocess::resolve(
        config.postprocess.as_ref(),
        file,
        crate::postprocess::ModelShapes {
            outputs: &output_shapes,
            input_len,
            image_size,
        },
        &mut p,
    );
    match (preprocess, post) {
        (Some(preprocess), Some((postprocess, labels))) if p.is_empty() => Ok(Prepared {
            model,
            window,
            image,
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

/// The image stage for `file`'s model: `[image]` over the model's
/// `edgeinfer.image` metadata, resolved against its input dimensions.
fn image_stage(
    config: &Config,
    file: &ModelFile,
    input: &crate::model::DeclaredInput,
    p: &mut Problems,
) -> Option<ImagePrep> {
    let meta = match file.metadata(IMAGE_META).map(ImageConfig::from_metadata) {
        None => ImageConfig::default(),
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            p.extend([ConfigProblem {
                file: file.origin().into(),
                field: format!("metadata {IMAGE_META}"),
                message: format!("expected the JSON of [image] settings: {e}"),
            }]);
            return None;
        }
    };
    let mut settings = config.image.over(&meta);
    // A model that takes bytes gets bytes unless told otherwise.
    if settings.dtype.is_none() && input.dtype == u8::datum_type() {
        settings.dtype = Some(crate::image::ImageDtype::U8);
    }
    settings.resolve(&input.dims, p)
}
