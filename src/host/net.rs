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

/// Network shape: `mlp:H1,H2,...` (dense hidden layers) or `cnn1d:C1,C2,...`
/// (1-D convolutions, then global average pooling), each ending in a dense
/// layer to the outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arch {
    /// Hidden layer widths (none: a linear model).
    Mlp(Vec<usize>),
    /// Convolution channel counts.
    Cnn1d(Vec<usize>),
}

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
            "cnn1d" => Err(format!("--arch {s}: expected at least one channel count")),
            _ => Err(format!(
                "--arch {s}: expected mlp:H1,H2,... or cnn1d:C1,C2,..."
            )),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, sizes) = match self {
            Arch::Mlp(s) => ("mlp", s),
            Arch::Cnn1d(s) => ("cnn1d", s),
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
}

/// A network of dense and 1-D convolution layers; the last layer is dense
/// and gives logits (classification) or values (regression).
#[derive(Debug)]
pub struct Net {
    /// Its shape.
    pub arch: Arch,
    /// Shape of one input example: `[features]` or `[channels, window]`.
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
    /// (`[n, features]` or `[n, channels, window]`).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let last = self.layers.len() - 1;
        let mut h = x.clone();
        for (i, (kind, w, b)) in self.layers.iter().enumerate() {
            h = match *kind {
                Kind::Dense { .. } => {
                    if h.rank() == 3 {
                        // Convolutions end in global average pooling over
                        // time; an MLP over windows takes them flattened.
                        h = match self.arch {
                            Arch::Cnn1d(_) => h.mean(2)?,
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
            };
            if i < last {
                h = match self.activation {
                    Activation::Relu => h.relu()?,
                    Activation::Tanh => h.tanh()?,
                    Activation::Identity => h,
                };
            }
        }
        Ok(h)
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
    /// classification. Input is `x` [N, features] or `signal` [N, C, W].
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
        let windowed = self.input.len() == 2;
        let x = g.input(if windowed { "signal" } else { "x" }, ElemType::F32, &dims);
        let norm_dims: Vec<usize> = if windowed {
            vec![1, self.input[0], 1]
        } else {
            vec![1, self.input[0]]
        };
        let mut h = g.normalize(&x, &norm_dims, mean.to_vec(), std.to_vec());
        let last = self.layers.len() - 1;
        let mut outputs = 0;
        for (i, (kind, w, b)) in self.layers.iter().enumerate() {
            h = match *kind {
                Kind::Dense { inputs, outputs: o } => {
                    if windowed && outputs == 0 {
                        h = match self.arch {
                            Arch::Cnn1d(_) => {
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
            };
            if i < last {
                h = match self.activation {
                    Activation::Relu => g.relu(&h),
                    Activation::Tanh => g.tanh(&h),
                    Activation::Identity => h,
                };
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
    }
}
