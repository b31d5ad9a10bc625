//! The trainable networks (candle) and their ONNX export. One layer list
//! serves both, so the exported graph is the trained graph by construction.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor, Var};

use super::HostError;
use crate::export::{Dim, ElemType, ExportError, GraphBuilder};
use crate::rng::Rng;
use tract_onnx::pb::ModelProto;

/// Network shape: `mlp:H1,H2,...` (dense hidden layers), `cnn1d:C1,C2,...`
/// (1-D convolutions, then global average pooling) or `cnn2d:C1,C2,...`
/// (blocks of 3x3 convolution and 2x2 max pooling over images, then global
/// average pooling), each ending in a dense layer to the outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arch {
    /// Hidden layer widths (none: a linear model).
    Mlp(Vec<usize>),
    /// Convolution channel counts.
    Cnn1d(Vec<usize>),
    /// Channel counts of the image blocks.
    Cnn2d(Vec<usize>),
}

/// Kernel width of every `cnn2d` convolution (padding 1 keeps the size).
pub const CNN2D_KERNEL: usize = 3;

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, sizes) = s.split_once(':').unwrap_or((s, ""));
        let sizes = sizes
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| match p.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "--arch {s}: expected positive layer sizes, found {p:?}"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        match kind {
            "mlp" => Ok(Arch::Mlp(sizes)),
            "cnn1d" if !sizes.is_empty() => Ok(Arch::Cnn1d(sizes)),
            "cnn2d" if !sizes.is_empty() => Ok(Arch::Cnn2d(sizes)),
            "cnn1d" | "cnn2d" => Err(format!("--arch {s}: expected at least one channel count")),
            _ => Err(format!(
                "--arch {s}: expected mlp:H1,H2,..., cnn1d:C1,C2,... or cnn2d:C1,C2,..."
            )),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, sizes) = match self {
            Arch::Mlp(s) => ("mlp", s),
            Arch::Cnn1d(s) => ("cnn1d", s),
            Arch::Cnn2d(s) => ("cnn2d", s),
        };
        let sizes: Vec<String> = sizes.iter().map(|n| n.to_string()).collect();
        write!(f, "{kind}:{}", sizes.join(","))
    }
}

/// How weights start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Every parameter, biases too, from normal(0, std) (the seed network's way).
    Normal(f64),
    /// Weights from normal(0, √(2 / (fan_in + fan_out))), biases zero.
    Xavier,
    /// Weights from normal(0, √(2 / fan_in)), biases zero (for ReLU).
    He,
}

impl FromStr for Init {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "xavier" => Ok(Init::Xavier),
            "he" => Ok(Init::He),
            _ => match s.strip_prefix("normal:").map(str::parse::<f64>) {
                Some(Ok(std)) if std > 0.0 && std.is_finite() => Ok(Init::Normal(std)),
                _ => Err(format!("--init {s}: expected normal:STD, xavier or he")),
            },
        }
    }
}

/// The nonlinearity after each hidden layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// max(0, x).
    Relu,
    /// tanh(x).
    Tanh,
    /// None: stacked linear layers (the seed network).
    Identity,
}

impl FromStr for Activation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "relu" => Ok(Activation::Relu),
            "tanh" => Ok(Activation::Tanh),
            "none" => Ok(Activation::Identity),
            _ => Err(format!("--activation {s}: expected relu, tanh or none")),
        }
    }
}

impl Activation {
    /// Its name on the command line and in the model metadata.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
            Activation::Identity => "none",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Dense {
        inputs: usize,
        outputs: usize,
    },
    Conv {
        inputs: usize,
        outputs: usize,
        kernel: usize,
    },
    /// 3x3 convolution, activation, then 2x2 max pooling.
    Block2d {
        inputs: usize,
        outputs: usize,
    },
}

/// A network of dense, 1-D convolution and 2-D block layers; the last layer
/// is dense and gives logits (classification) or values (regression).
#[derive(Debug)]
pub struct Net {
    /// Its shape.
    pub arch: Arch,
    /// Shape of one input example: `[features]`, `[channels, window]` or
    /// `[channels, height, width]`.
    pub input: Vec<usize>,
    /// Hidden nonlinearity.
    pub activation: Activation,
    layers: Vec<(Kind, Var, Var)>,
}

fn candle(e: candle_core::Error) -> HostError {
    HostError::Train(e.to_string())
}

impl Net {
    /// A freshly initialized network from `input` to `outputs`; `kernel` is
    /// the convolution width (odd; padding keeps the length).
    pub fn new(
        arch: &Arch,
        input: &[usize],
        outputs: usize,
        kernel: usize,
        init: Init,
        activation: Activation,
        rng: &mut Rng,
    ) -> Result<Net, HostError> {
        let mut kinds = Vec::new();
        match arch {
            Arch::Mlp(hidden) => {
                let mut width = input.iter().product();
                for &h in hidden {
                    kinds.push(Kind::Dense {
                        inputs: width,
                        outputs: h,
                    });
                    width = h;
                }
                kinds.push(Kind::Dense {
                    inputs: width,
                    outputs,
                });
            }
            Arch::Cnn1d(channels) => {
                if input.len() != 2 {
                    return Err(HostError::Usage(
                        "--arch cnn1d needs windows: give --window SIZE (and --channels)".into(),
                    ));
                }
                if kernel.is_multiple_of(2) || kernel > input[1] {
                    return Err(HostError::Usage(format!(
                        "--kernel {kernel}: expected an odd width of at most the window ({})",
                        input[1]
                    )));
                }
                let mut ch = input[0];
                for &c in channels {
                    kinds.push(Kind::Conv {
                        inputs: ch,
                        outputs: c,
                        kernel,
                    });
                    ch = c;
                }
                kinds.push(Kind::Dense {
                    inputs: ch,
                    outputs,
                });
            }
            Arch::Cnn2d(channels) => {
                if input.len() != 3 {
                    return Err(HostError::Usage(
                        "--arch cnn2d needs images: give --images DIR".into(),
                    ));
                }
                // Each block halves the size (pooling floors): the last
                // block must still have a pixel to pool.
                let smallest = input[1].min(input[2]);
                if smallest >> channels.len() == 0 {
                    return Err(HostError::Usage(format!(
                        "--arch {arch}: {} blocks halve {}x{} images {} times, \
                         below one pixel: use fewer blocks or a larger --size",
                        channels.len(),
                        input[2],
                        input[1],
                        channels.len()
                    )));
                }
                let mut ch = input[0];
                for &c in channels {
                    kinds.push(Kind::Block2d {
                        inputs: ch,
                        outputs: c,
                    });
                    ch = c;
                }
                kinds.push(Kind::Dense {
                    inputs: ch,
                    outputs,
                });
            }
        }
        let layers = kinds
            .into_iter()
            .map(|k| {
                let (wshape, fan_in, fan_out, bias): (Vec<usize>, usize, usize, usize) = match k {
                    Kind::Dense { inputs, outputs } => {
                        (vec![outputs, inputs], inputs, outputs, outputs)
                    }
                    Kind::Conv {
                        inputs,
                        outputs,
                        kernel,
                    } => (
                        vec![outputs, inputs, kernel],
                        inputs * kernel,
                        outputs * kernel,
                        outputs,
                    ),
                    Kind::Block2d { inputs, outputs } => {
                        let area = CNN2D_KERNEL * CNN2D_KERNEL;
                        (
                            vec![outputs, inputs, CNN2D_KERNEL, CNN2D_KERNEL],
                            inputs * area,
                            outputs * area,
                            outputs,
                        )
                    }
                };
                let n = wshape.iter().product();
                let (w, b) = match init {
                    Init::Normal(std) => (rng.normal_vec(n, std), rng.normal_vec(bias, std)),
                    Init::Xavier => (
                        rng.normal_vec(n, (2.0 / (fan_in + fan_out) as f64).sqrt()),
                        vec![0.0; bias],
                    ),
                    Init::He => (
                        rng.normal_vec(n, (2.0 / fan_in as f64).sqrt()),
                        vec![0.0; bias],
                    ),
                };
                let w = Var::from_tensor(&Tensor::from_vec(w, wshape, &Device::Cpu)?)?;
                let b = Var::from_tensor(&Tensor::from_vec(b, bias, &Device::Cpu)?)?;
                Ok((k, w, b))
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(candle)?;
        Ok(Net {
            arch: arch.clone(),
            input: input.to_vec(),
            activation,
            layers,
        })
    }

    /// Trainable parameters, for the optimizer.
    pub fn vars(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|(_, w, b)| [w.clone(), b.clone()])
            .collect()
    }

    /// Parameter count.
    pub fn params(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }

    /// Logits or values for a batch of standardized examples
    /// (`[n, features]`, `[n, channels, window]` or `[n, channels, height,
    /// width]`).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let last = self.layers.len() - 1;
        let mut h = x.clone();
        for (i, (kind, w, b)) in self.layers.iter().enumerate() {
            h = match *kind {
                Kind::Dense { .. } => {
                    if h.rank() > 2 {
                        // Convolutions end in global average pooling over
                        // time or space; an MLP takes its input flattened.
                        h = match self.arch {
                            Arch::Cnn1d(_) => h.mean(2)?,
                            Arch::Cnn2d(_) => h.mean(3)?.mean(2)?,
                            Arch::Mlp(_) => h.flatten_from(1)?,
                        };
                    }
                    h.matmul(&w.as_tensor().t()?)?
                        .broadcast_add(b.as_tensor())?
                }
                Kind::Conv {
                    outputs, kernel, ..
                } => h
                    .conv1d(w.as_tensor(), kernel / 2, 1, 1, 1)?
                    .broadcast_add(&b.as_tensor().reshape((1, outputs, 1))?)?,
                Kind::Block2d { inputs, outputs } => {
                    let pad = CNN2D_KERNEL / 2;
                    let (_, _, height, width) = h.dims4()?;
                    // candle 0.9.2's CPU conv2d mistakes a contiguous NCHW
                    // input for its NHWC working copy when channels, height
                    // and width are equal (the strides coincide) and gives
                    // wrong results; padded by hand the sizes differ.
                    let c = if inputs == height && inputs == width {
                        h.pad_with_zeros(2, pad, pad)?
                            .pad_with_zeros(3, pad, pad)?
                            .conv2d(w.as_tensor(), 0, 1, 1, 1)?
                    } else {
                        h.conv2d(w.as_tensor(), pad, 1, 1, 1)?
                    };
                    let c = c.broadcast_add(&b.as_tensor().reshape((1, outputs, 1, 1))?)?;
                    // The activation comes before the pooling, as in the
                    // exported graph (the loop below skips blocks).
                    self.activate(c)?.max_pool2d(2)?
                }
            };
            if i < last && !matches!(kind, Kind::Block2d { .. }) {
                h = self.activate(h)?;
            }
        }
        Ok(h)
    }

    fn activate(&self, h: Tensor) -> candle_core::Result<Tensor> {
        match self.activation {
            Activation::Relu => h.relu(),
            Activation::Tanh => h.tanh(),
            Activation::Identity => Ok(h),
        }
    }

    /// Outputs for raw examples, standardized with `mean`/`std` first:
    /// logits or values, or with `softmax` the probabilities the exported
    /// classifier gives.
    pub fn outputs(
        &self,
        x: &[Vec<f32>],
        shape: &[usize],
        mean: &[f32],
        std: &[f32],
        softmax: bool,
    ) -> Result<Vec<Vec<f32>>, HostError> {
        if x.is_empty() {
            return Ok(vec![]);
        }
        let t = batch_tensor(x, shape, mean, std)?;
        self.forward(&t)
            .and_then(|o| {
                if softmax {
                    candle_nn::ops::softmax(&o, 1)
                } else {
                    Ok(o)
                }
            })
            .and_then(|o| o.to_vec2::<f32>())
            .map_err(candle)
    }

    /// Copies of every parameter, to restore the best epoch's weights.
    pub fn snapshot(&self) -> Result<Vec<Tensor>, HostError> {
        self.vars()
            .iter()
            .map(|v| v.as_tensor().copy())
            .collect::<candle_core::Result<_>>()
            .map_err(candle)
    }

    /// Sets every parameter back to `snapshot`.
    pub fn restore(&self, snapshot: &[Tensor]) -> Result<(), HostError> {
        for (v, t) in self.vars().iter().zip(snapshot) {
            v.set(t).map_err(candle)?;
        }
        Ok(())
    }

    /// Saves the parameters and the standardization beside the model, so
    /// `verify` can rerun the trainer's network.
    pub fn save(&self, path: &Path, mean: &[f32], std: &[f32]) -> Result<(), HostError> {
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for (i, (_, w, b)) in self.layers.iter().enumerate() {
            map.insert(format!("layer{i}.weight"), w.as_tensor().clone());
            map.insert(format!("layer{i}.bias"), b.as_tensor().clone());
        }
        let dev = Device::Cpu;
        map.insert(
            "norm.mean".into(),
            Tensor::from_vec(mean.to_vec(), mean.len(), &dev).map_err(candle)?,
        );
        map.insert(
            "norm.std".into(),
            Tensor::from_vec(std.to_vec(), std.len(), &dev).map_err(candle)?,
        );
        candle_core::safetensors::save(&map, path).map_err(|e| HostError::Output {
            file: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Loads what [`Net::save`] wrote into a network of this shape; returns
    /// the standardization.
    pub fn load(&self, path: &Path) -> Result<(Vec<f32>, Vec<f32>), HostError> {
        let bad = |message: String| HostError::Input {
            file: path.display().to_string(),
            message,
        };
        let map = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| bad(format!("cannot read trainer weights: {e}")))?;
        let get = |k: &str| {
            map.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("expected tensor {k:?}")))
        };
        for (i, (_, w, b)) in self.layers.iter().enumerate() {
            for (var, key) in [
                (w, format!("layer{i}.weight")),
                (b, format!("layer{i}.bias")),
            ] {
                let t = get(&key)?;
                if t.dims() != var.dims() {
                    return Err(bad(format!(
                        "{key}: expected shape {:?}, found {:?}",
                        var.dims(),
                        t.dims()
                    )));
                }
                var.set(&t.to_dtype(DType::F32).map_err(candle)?)
                    .map_err(candle)?;
            }
        }
        let vec =
            |k: &str| -> Result<Vec<f32>, HostError> { get(k)?.to_vec1::<f32>().map_err(candle) };
        Ok((vec("norm.mean")?, vec("norm.std")?))
    }

    /// The ONNX graph of this network on raw (unstandardized) input:
    /// Sub/Div with `mean`/`std` first, then the layers, then Softmax for
    /// classification. Input is `x` [N, features], `signal` [N, C, W] or
    /// `image` [N, C, H, W] (the device pins N to 1).
    pub fn to_onnx(
        &self,
        mean: &[f32],
        std: &[f32],
        softmax: bool,
        metadata: &[(String, String)],
    ) -> Result<ModelProto, HostError> {
        self.graph(mean, std, softmax, metadata)
            .map_err(|e| HostError::Train(format!("export: {e}")))
    }

    fn graph(
        &self,
        mean: &[f32],
        std: &[f32],
        softmax: bool,
        metadata: &[(String, String)],
    ) -> Result<ModelProto, ExportError> {
        let host = |v: &Var| -> Vec<f32> {
            v.as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .unwrap_or_default()
        };
        let mut g = GraphBuilder::new("edgeinfer_host");
        let batch = Dim::Symbol("N".into());
        let mut dims = vec![batch.clone()];
        dims.extend(self.input.iter().map(|&d| Dim::from(d)));
        let windowed = self.input.len() >= 2;
        let name = match self.input.len() {
            1 => "x",
            2 => "signal",
            _ => "image",
        };
        let x = g.input(name, ElemType::F32, &dims);
        // Per-feature or per-channel constants, broadcast over the rest.
        let mut norm_dims = vec![1, self.input[0]];
        norm_dims.resize(self.input.len() + 1, 1);
        let mut h = g.normalize(&x, &norm_dims, mean.to_vec(), std.to_vec());
        let last = self.layers.len() - 1;
        let mut outputs = 0;
        for (i, (kind, w, b)) in self.layers.iter().enumerate() {
            h = match *kind {
                Kind::Dense { inputs, outputs: o } => {
                    if windowed && outputs == 0 {
                        h = match self.arch {
                            Arch::Cnn1d(_) | Arch::Cnn2d(_) => {
                                let p = g.global_avg_pool(&h);
                                g.flatten(&p, 1)
                            }
                            Arch::Mlp(_) => g.flatten(&h, 1),
                        };
                    }
                    outputs = o;
                    g.gemm(&h, inputs, o, host(w), host(b))?
                }
                Kind::Conv {
                    inputs,
                    outputs: o,
                    kernel,
                } => g.conv(&h, inputs, o, &[kernel], 1, kernel / 2, 1, host(w), host(b))?,
                Kind::Block2d { inputs, outputs: o } => {
                    let k = CNN2D_KERNEL;
                    let c = g.conv(&h, inputs, o, &[k, k], 1, k / 2, 1, host(w), host(b))?;
                    let a = self.activate_onnx(&mut g, c);
                    g.max_pool(&a, &[2, 2], 2)
                }
            };
            if i < last && !matches!(kind, Kind::Block2d { .. }) {
                h = self.activate_onnx(&mut g, h);
            }
        }
        let (y, name) = if softmax {
            (g.softmax(&h, 1), "probs")
        } else {
            (h, "y")
        };
        g.output(&y, name, ElemType::F32, &[batch, outputs.into()]);
        for (k, v) in metadata {
            g.metadata(k, v);
        }
        Ok(g.finish())
    }

    fn activate_onnx(&self, g: &mut GraphBuilder, h: String) -> String {
        match self.activation {
            Activation::Relu => g.relu(&h),
            Activation::Tanh => g.tanh(&h),
            Activation::Identity => h,
        }
    }
}

/// A `[n, ...shape]` tensor of `rows`, standardized with `mean`/`std`
/// per group (feature or channel).
pub fn batch_tensor(
    rows: &[Vec<f32>],
    shape: &[usize],
    mean: &[f32],
    std: &[f32],
) -> Result<Tensor, HostError> {
    let per = shape[1..].iter().product::<usize>();
    let mut flat = Vec::with_capacity(rows.len() * rows.first().map_or(0, Vec::len));
    for r in rows {
        for (g, chunk) in r.chunks(per).enumerate() {
            flat.extend(chunk.iter().map(|v| (v - mean[g]) / std[g]));
        }
    }
    let mut dims = vec![rows.len()];
    dims.extend_from_slice(shape);
    Tensor::from_vec(flat, dims, &Device::Cpu).map_err(candle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_init_and_activation_parse() {
        assert_eq!("mlp:20".parse::<Arch>().unwrap(), Arch::Mlp(vec![20]));
        assert_eq!("mlp:".parse::<Arch>().unwrap(), Arch::Mlp(vec![]));
        assert_eq!(
            "cnn1d:8,16".parse::<Arch>().unwrap(),
            Arch::Cnn1d(vec![8, 16])
        );
        assert!("cnn1d".parse::<Arch>().is_err());
        assert!("mlp:0".parse::<Arch>().is_err());
        assert!("rnn:3".parse::<Arch>().is_err());
        assert_eq!("normal:0.1".parse::<Init>().unwrap(), Init::Normal(0.1));
        assert!("normal:-1".parse::<Init>().is_err());
        assert_eq!("none".parse::<Activation>().unwrap(), Activation::Identity);
        assert_eq!(Arch::Cnn1d(vec![8, 16]).to_string(), "cnn1d:8,16");
        assert_eq!(
            "cnn2d:16,32".parse::<Arch>().unwrap(),
            Arch::Cnn2d(vec![16, 32])
        );
        assert_eq!(Arch::Cnn2d(vec![4]).to_string(), "cnn2d:4");
        assert!("cnn2d:".parse::<Arch>().is_err());
    }
}

#[cfg(test)]
mod export_tests {
    use super::*;
    use tract_onnx::prelude::*;

    /// The candle network and its ONNX export (run by tract) agree on
    /// images of one and three channels, through one and two blocks.
    #[test]
    fn cnn2d_export_matches_the_trainer() {
        for (shape, blocks) in [
            (vec![1usize, 12, 12], vec![4usize]),
            (vec![1, 12, 12], vec![4, 8]),
            (vec![3, 12, 10], vec![4, 8]),
            // Channels, height and width equal: the case candle's conv2d
            // gets wrong unless padded by hand.
            (vec![16, 16, 16], vec![8]),
            (vec![1, 32, 32], vec![16, 32]),
        ] {
            let mut rng = Rng::new(5);
            let net = Net::new(
                &Arch::Cnn2d(blocks.clone()),
                &shape,
                3,
                3,
                Init::He,
                Activation::Relu,
                &mut rng,
            )
            .unwrap();
            let per: usize = shape.iter().product();
            let n = 4;
            let x: Vec<Vec<f32>> = (0..n).map(|_| rng.normal_vec(per, 1.0)).collect();
            let mean = vec![0.1; shape[0]];
            let std = vec![2.0; shape[0]];
            let trainer = net.outputs(&x, &shape, &mean, &std, true).unwrap();
            let proto = net.to_onnx(&mean, &std, true, &[]).unwrap();
            let bytes = crate::export::to_bytes(&proto);
            let file = crate::ModelFile::from_bytes(bytes, "test").unwrap();
            let mut dims = vec![n];
            dims.extend_from_slice(&shape);
            let mut model = file
                .load(Some(&[crate::model::InputPin {
                    dtype: f32::datum_type(),
                    shape: dims.clone(),
                }]))
                .unwrap();
            let input = tract_onnx::prelude::Tensor::from_shape(&dims, &x.concat()).unwrap();
            let out = model.run(tvec!(input.into())).unwrap();
            let exported: Vec<f32> = out[0]
                .to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect();
            let diff = exported
                .iter()
                .zip(trainer.iter().flatten())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                diff < 1e-5,
                "{shape:?} {blocks:?}: {diff}\n{exported:?}\n{trainer:?}"
            );
        }
    }
}
