//! A plain reference evaluator for the ONNX op set that [`GraphBuilder`]
//! writes, sharing no code with tract.
//!
//! Slow and simple on purpose: it produces the shipped models' reference
//! outputs and checks tract's results in tests, so it must not inherit
//! tract's bugs. f32 only, batch of any size.
//!
//! [`GraphBuilder`]: super::GraphBuilder

use std::collections::HashMap;

use tract_onnx::pb;

/// A dense row-major f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl Dense {
    /// A tensor of `shape` holding `data`.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Dense { shape, data }
    }
}

/// Errors of the reference evaluator.
#[derive(Debug, thiserror::Error)]
#[error("reference evaluator: {0}")]
pub struct RefError(String);

fn err<T>(m: impl Into<String>) -> Result<T, RefError> {
    Err(RefError(m.into()))
}

fn attr_i(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.i)
        .unwrap_or(default)
}

fn attr_ints(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.clone())
}

fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn broadcast(a: &Dense, b: &Dense, f: impl Fn(f32, f32) -> f32) -> Result<Dense, RefError> {
    let rank = a.shape.len().max(b.shape.len());
    let pad = |s: &[usize]| {
        let mut v = vec![1; rank - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (sa, sb) = (pad(&a.shape), pad(&b.shape));
    let mut out = Vec::with_capacity(rank);
    for (x, y) in sa.iter().zip(&sb) {
        out.push(match (x, y) {
            (x, y) if x == y => *x,
            (1, y) => *y,
            (x, 1) => *x,
            _ => return err(format!("cannot broadcast {:?} with {:?}", a.shape, b.shape)),
        });
    }
    let (ta, tb, to) = (strides_of(&sa), strides_of(&sb), strides_of(&out));
    let n: usize = out.iter().product();
    let mut data = Vec::with_capacity(n);
    for i in 0..n {
        let (mut ia, mut ib) = (0, 0);
        for d in 0..rank {
            let idx = (i / to[d]) % out[d];
            if sa[d] != 1 {
                ia += idx * ta[d];
            }
            if sb[d] != 1 {
                ib += idx * tb[d];
            }
        }
        data.push(f(a.data[ia], b.data[ib]));
    }
    Ok(Dense::new(out, data))
}

fn map(a: &Dense, f: impl Fn(f32) -> f32) -> Dense {
    Dense::new(a.shape.clone(), a.data.iter().map(|&x| f(x)).collect())
}

fn conv(node: &pb::NodeProto, x: &Dense, w: &Dense, b: Option<&Dense>) -> Result<Dense, RefError> {
    let spatial = x.shape.len() - 2;
    // Treat 1-D as 2-D with height 1: one loop nest serves both.
    let (n, c) = (x.shape[0], x.shape[1]);
    let (h, wd) = if spatial == 1 {
        (1, x.shape[2])
    } else {
        (x.shape[2], x.shape[3])
    };
    let (m, cg) = (w.shape[0], w.shape[1]);
    let (kh, kw) = if spatial == 1 {
        (1, w.shape[2])
    } else {
        (w.shape[2], w.shape[3])
    };
    let groups = attr_i(node, "group", 1) as usize;
    let strides = attr_ints(node, "strides").unwrap_or(vec![1; spatial]);
    let pads = attr_ints(node, "pads").unwrap_or(vec![0; 2 * spatial]);
    let (sh, sw, ph0, pw0, ph1, pw1) = if spatial == 1 {
        (
            1,
            strides[0] as usize,
            0,
            pads[0] as usize,
            0,
            pads[1] as usize,
        )
    } else {
        (
            strides[0] as usize,
            strides[1] as usize,
            pads[0] as usize,
            pads[1] as usize,
            pads[2] as usize,
            pads[3] as usize,
        )
    };
    if c != cg * groups || m % groups != 0 {
        return err("Conv: channels do not match groups");
    }
    let oh = (h + ph0 + ph1 - kh) / sh + 1;
    let ow = (wd + pw0 + pw1 - kw) / sw + 1;
    let mpg = m / groups;
    let mut out = vec![0.0f32; n * m * oh * ow];
    for bi in 0..n {
        for oc in 0..m {
            let g = oc / mpg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map(|b| b.data[oc]).unwrap_or(0.0);
                    for ic in 0..cg {
                        let ci = g * cg + ic;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * sh + ky) as isize - ph0 as isize;
                                let ix = (ox * sw + kx) as isize - pw0 as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv =
                                    x.data[((bi * c + ci) * h + iy as usize) * wd + ix as usize];
                                let wv = w.data[((oc * cg + ic) * kh + ky) * kw + kx];
                                acc += xv * wv;
                            }
                        }
                    }
                    out[((bi * m + oc) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    let shape = if spatial == 1 {
        vec![n, m, ow]
    } else {
        vec![n, m, oh, ow]
    };
    Ok(Dense::new(shape, out))
}

fn pool(node: &pb::NodeProto, x: &Dense, max: bool, global: bool) -> Dense {
    let spatial = x.shape.len() - 2;
    let (n, c) = (x.shape[0], x.shape[1]);
    let (h, w) = if spatial == 1 {
        (1, x.shape[2])
    } else {
        (x.shape[2], x.shape[3])
    };
    let (kh, kw, sh, sw) = if global {
        (h, w, 1, 1)
    } else {
        let k = attr_ints(node, "kernel_shape").unwrap_or_default();
        let s = attr_ints(node, "strides").unwrap_or(vec![1; spatial]);
        if spatial == 1 {
            (1, k[0] as usize, 1, s[0] as usize)
        } else {
            (k[0] as usize, k[1] as usize, s[0] as usize, s[1] as usize)
        }
    };
    let (oh, ow) = ((h - kh) / sh + 1, (w - kw) / sw + 1);
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                for ky in 0..kh {
                    for kx in 0..kw {
                        let v = x.data[(plane * h + oy * sh + ky) * w + ox * sw + kx];
                        acc = if max { acc.max(v) } else { acc + v };
                    }
                }
                out.push(if max { acc } else { acc / (kh * kw) as f32 });
            }
        }
    }
    let shape = if spatial == 1 {
        vec![n, c, ow]
    } else {
        vec![n, c, oh, ow]
    };
    Dense::new(shape, out)
}

fn matmul(a: &Dense, b: &Dense, trans_b: bool) -> Result<Dense, RefError> {
    let (m, k) = (a.shape[0], a.shape[1]);
    let (k2, n) = if trans_b {
        (b.shape[1], b.shape[0])
    } else {
        (b.shape[0], b.shape[1])
    };
    if k != k2 {
        return err(format!("matmul: {:?} x {:?}", a.shape, b.shape));
    }
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0;
            for p in 0..k {
                let bv = if trans_b {
                    b.data[j * k + p]
                } else {
                    b.data[p * n + j]
                };
                acc += a.data[i * k + p] * bv;
            }
            out[i * n + j] = acc;
        }
    }
    Ok(Dense::new(vec![m, n], out))
}

fn softmax(x: &Dense, axis: i64) -> Dense {
    let rank = x.shape.len() as i64;
    let axis = if axis < 0 { axis + rank } else { axis } as usize;
    let dim = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    let outer: usize = x.shape[..axis].iter().product();
    let mut data = x.data.clone();
    for o in 0..outer {
        for i in 0..inner {
            let idx = |d: usize| (o * dim + d) * inner + i;
            let max = (0..dim)
                .map(|d| data[idx(d)])
                .fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = (0..dim).map(|d| (data[idx(d)] - max).exp()).sum();
            for d in 0..dim {
                data[idx(d)] = (data[idx(d)] - max).exp() / sum;
            }
        }
    }
    Dense::new(x.shape.clone(), data)
}

/// Evaluates `model` on f32 `inputs` (in graph input order); returns the
/// graph outputs in order.
pub fn eval(model: &pb::ModelProto, inputs: &[Dense]) -> Result<Vec<Dense>, RefError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| RefError("no graph".into()))?;
    let mut values: HashMap<String, Dense> = HashMap::new();
    for t in &graph.initializer {
        let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        let data = if !t.float_data.is_empty() || t.dims.iter().product::<i64>() == 0 {
            t.float_data.clone()
        } else {
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        values.insert(t.name.clone(), Dense::new(shape, data));
    }
    let free: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !values.contains_key(&i.name))
        .collect();
    if free.len() != inputs.len() {
        return err(format!(
            "expected {} inputs, got {}",
            free.len(),
            inputs.len()
        ));
    }
    for (vi, x) in free.iter().zip(inputs) {
        values.insert(vi.name.clone(), x.clone());
    }
    for node in &graph.node {
        let arg = |i: usize| -> Result<&Dense, RefError> {
            node.input
                .get(i)
                .and_then(|n| values.get(n))
                .ok_or_else(|| RefError(format!("{}: missing input {i}", node.name)))
        };
        let out = match node.op_type.as_str() {
            "Identity" => arg(0)?.clone(),
            "Relu" => map(arg(0)?, |x| x.max(0.0)),
            "Sigmoid" => map(arg(0)?, |x| 1.0 / (1.0 + (-x).exp())),
            "Tanh" => map(arg(0)?, f32::tanh),
            "Clip" => {
                let lo = arg(1).map(|t| t.data[0]).unwrap_or(f32::NEG_INFINITY);
                let hi = arg(2).map(|t| t.data[0]).unwrap_or(f32::INFINITY);
                map(arg(0)?, |x| x.max(lo).min(hi))
            }
            "Add" => broadcast(arg(0)?, arg(1)?, |a, b| a + b)?,
            "Sub" => broadcast(arg(0)?, arg(1)?, |a, b| a - b)?,
            "Mul" => broadcast(arg(0)?, arg(1)?, |a, b| a * b)?,
            "Div" => broadcast(arg(0)?, arg(1)?, |a, b| a / b)?,
            "MatMul" => matmul(arg(0)?, arg(1)?, false)?,
            "Gemm" => {
                let y = matmul(arg(0)?, arg(1)?, attr_i(node, "transB", 0) == 1)?;
                match arg(2) {
                    Ok(c) => broadcast(&y, c, |a, b| a + b)?,
                    Err(_) => y,
                }
            }
            "Conv" => conv(node, arg(0)?, arg(1)?, arg(2).ok())?,
            "MaxPool" => pool(node, arg(0)?, true, false),
            "AveragePool" => pool(node, arg(0)?, false, false),
            "GlobalAveragePool" => pool(node, arg(0)?, false, true),
            "Flatten" => {
                let x = arg(0)?;
                let axis = attr_i(node, "axis", 1) as usize;
                let outer: usize = x.shape[..axis].iter().product();
                Dense::new(vec![outer, x.data.len() / outer.max(1)], x.data.clone())
            }
            "Softmax" => softmax(arg(0)?, attr_i(node, "axis", -1)),
            other => return err(format!("op {other} is not supported")),
        };
        values.insert(node.output[0].clone(), out);
    }
    graph
        .output
        .iter()
        .map(|o| {
            values
                .remove(&o.name)
                .ok_or_else(|| RefError(format!("output {} was not computed", o.name)))
        })
        .collect()
}
