//! The training loop: seeded splits, forward, loss, backward, update, early
//! stopping on validation loss, test metrics, k-fold estimates.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW, SGD};
use serde::Serialize;

use super::data::{Dataset, Targets, Task};
use super::images::Augment;
use super::net::{batch_tensor, Activation, Arch, Init, Net};
use super::split::{shuffled, split, standardization};
use super::HostError;
use crate::rng::Rng;

/// The update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerKind {
    /// Adam (β1 0.9, β2 0.999, ε 1e-8, no weight decay).
    Adam,
    /// Plain stochastic gradient descent.
    Sgd,
}

/// What is minimized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Loss {
    /// Mean squared error (of the softmax vs one-hot, for classification).
    Mse,
    /// Softmax cross-entropy (classification only).
    CrossEntropy,
}

impl Loss {
    /// The loss for `task`: `chosen`, else cross-entropy to classify and
    /// MSE to regress; cross-entropy on a regression is refused.
    pub fn for_task(chosen: Option<Loss>, task: Task) -> Result<Loss, HostError> {
        match (chosen, task) {
            (Some(Loss::CrossEntropy), Task::Regress) => Err(HostError::Usage(
                "--loss cross-entropy: expected --task classify".into(),
            )),
            (Some(l), _) => Ok(l),
            (None, Task::Classify) => Ok(Loss::CrossEntropy),
            (None, Task::Regress) => Ok(Loss::Mse),
        }
    }
}

impl FitOptions {
    /// Checks the numbers and that the loss fits `task`.
    pub fn check(&self, task: Task) -> Result<(), HostError> {
        if self.epochs == 0
            || self.batch == Some(0)
            || self.lr.is_some_and(|lr| !(lr > 0.0 && lr.is_finite()))
        {
            return Err(HostError::Usage(
                "--epochs, --batch: expected at least 1; --lr: expected a positive number or auto"
                    .into(),
            ));
        }
        Loss::for_task(Some(self.loss), task).map(|_| ())
    }

    /// These options with every automatic choice made for `data`'s
    /// `train` examples: the batch size by [`auto_batch`], the patience by
    /// [`auto_patience`], the learning rate by [`find_lr`].
    pub fn resolved(&self, data: &Dataset, train: &[usize]) -> Result<FitOptions, HostError> {
        let mut o = self.clone();
        o.batch = Some(self.batch.unwrap_or_else(|| auto_batch(train.len())));
        o.patience = Some(self.patience.unwrap_or_else(|| auto_patience(self.epochs)));
        if o.lr.is_none() {
            o.lr = Some(find_lr(data, train, &o)?);
        }
        Ok(o)
    }
}

/// The smallest relative drop of the validation loss that counts as better.
const MIN_GAIN: f64 = 1e-3;
/// ... and the smallest absolute one.
const MIN_GAIN_ABS: f64 = 1e-4;

/// The batch size for `n` training examples: the largest power of two up
/// to a tenth of them, within 8..=32, so a small data set still gets about
/// ten updates per epoch and a large one gets many small, noisy steps,
/// which generalize better than few large ones.
pub fn auto_batch(n: usize) -> usize {
    let tenth = (n / 10).max(1);
    let pow2 = 1usize << (usize::BITS - 1 - tenth.leading_zeros());
    pow2.clamp(8, 32)
}

/// Epochs without a better validation loss before stopping: a twentieth of
/// the ceiling, at least 20.
pub fn auto_patience(epochs: usize) -> usize {
    (epochs / 20).max(20)
}

/// What every training run starts from: the standardized training
/// tensors, the freshly initialized network and the generator that
/// initialized it (it shuffles next).
struct Start {
    net: Net,
    x: Tensor,
    y: Tensor,
    rng: Rng,
    /// Training examples.
    n: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Start {
    fn new(data: &Dataset, train: &[usize], opts: &FitOptions) -> Result<Start, HostError> {
        let classes = data.outputs();
        let (xtr, ytr) = data.select(train);
        let (mean, std) = standardization(&xtr, &data.shape);
        let mut rng = Rng::new(opts.seed);
        let net = Net::new(
            &opts.arch,
            &data.shape,
            classes,
            opts.kernel,
            opts.init,
            opts.activation,
            &mut rng,
        )?;
        Ok(Start {
            x: batch_tensor(&xtr, &data.shape, &mean, &std)?,
            y: target_tensor(&ytr, opts.loss, classes)?,
            net,
            rng,
            n: xtr.len(),
            mean,
            std,
        })
    }
}

/// One optimizer step on the examples `rows` of `x`/`y` (augmented, with
/// `augment`); returns the batch's loss before the step.
#[allow(clippy::too_many_arguments)]
fn train_step(
    net: &Net,
    optimizer: &mut dyn Update,
    x: &Tensor,
    y: &Tensor,
    rows: &[usize],
    loss: Loss,
    classify: bool,
    augment: Option<(&Augment, &mut Rng)>,
) -> Result<f64, HostError> {
    let idx: Vec<u32> = rows.iter().map(|&i| i as u32).collect();
    let idx = Tensor::from_vec(idx, rows.len(), &Device::Cpu).map_err(candle)?;
    let xb = match augment {
        Some((a, rng)) => a.batch(rows, rng)?,
        None => x.index_select(&idx, 0).map_err(candle)?,
    };
    let yb = y.index_select(&idx, 0).map_err(candle)?;
    let out = net.forward(&xb).map_err(candle)?;
    let l = loss_of(&out, &yb, loss, classify).map_err(candle)?;
    let value = l
        .to_dtype(DType::F64)
        .and_then(|t| t.to_scalar::<f64>())
        .map_err(candle)?;
    if value.is_finite() {
        optimizer.step(&l).map_err(candle)?;
    }
    Ok(value)
}

/// The learning-rate range test: from the run's own initial weights, one
/// update per step with the rate rising geometrically from 1e-5 to 1 over
/// up to 200 steps, until the smoothed training loss is 4× its lowest. The
/// rate at the lowest smoothed loss, divided by 10, within 1e-4..=0.1, is
/// the one to train with (Smith, "Cyclical learning rates", 2017).
pub fn find_lr(data: &Dataset, train: &[usize], opts: &FitOptions) -> Result<f64, HostError> {
    const STEPS: usize = 200;
    let (lo, hi) = (1e-5f64, 1.0f64);
    let Start {
        net,
        x,
        y,
        mut rng,
        n,
        ..
    } = Start::new(data, train, opts)?;
    let classify = matches!(data.y, Targets::Class(_));
    let mut optimizer = optimizer(&net, opts.optimizer, lo)?;
    let batch = opts.batch.unwrap_or(32).max(1);
    let (mut smooth, mut best, mut best_lr) = (0.0f64, f64::INFINITY, 1e-3);
    let mut order = Vec::new();
    for step in 0..STEPS {
        let lr = lo * (hi / lo).powf(step as f64 / (STEPS - 1) as f64);
        optimizer.set_learning_rate(lr);
        if order.len() < batch {
            order = shuffled(n, &mut rng);
        }
        let chunk: Vec<usize> = order.drain(..batch.min(order.len())).collect();
        let value = train_step(
            &net,
            optimizer.as_mut(),
            &x,
            &y,
            &chunk,
            opts.loss,
            classify,
            None,
        )?;
        if !value.is_finite() {
            break;
        }
        // Exponential smoothing with bias correction: single batches are noisy.
        smooth = 0.9 * smooth + 0.1 * value;
        let smoothed = smooth / (1.0 - 0.9f64.powi(step as i32 + 1));
        if smoothed < best {
            best = smoothed;
            best_lr = lr;
        } else if step > 10 && smoothed > 4.0 * best {
            break;
        }
    }
    Ok((best_lr / 10.0).clamp(1e-4, 0.1))
}

/// An optimizer over `net`'s weights whose learning rate can change.
fn optimizer(net: &Net, kind: OptimizerKind, lr: f64) -> Result<Box<dyn Update>, HostError> {
    Ok(match kind {
        OptimizerKind::Adam => Box::new(
            AdamW::new(
                net.vars(),
                ParamsAdamW {
                    lr,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: 0.0,
                },
            )
            .map_err(candle)?,
        ),
        OptimizerKind::Sgd => Box::new(SGD::new(net.vars(), lr).map_err(candle)?),
    })
}

/// One optimizer step and its rate, for either optimizer.
trait Update {
    fn step(&mut self, loss: &Tensor) -> candle_core::Result<()>;
    fn set_learning_rate(&mut self, lr: f64);
}

impl<O: Optimizer> Update for O {
    fn step(&mut self, loss: &Tensor) -> candle_core::Result<()> {
        self.backward_step(loss)
    }
    fn set_learning_rate(&mut self, lr: f64) {
        Optimizer::set_learning_rate(self, lr)
    }
}

/// Everything a fit needs besides the data.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Network shape.
    pub arch: Arch,
    /// Convolution width.
    pub kernel: usize,
    /// Initial weights.
    pub init: Init,
    /// Hidden nonlinearity.
    pub activation: Activation,
    /// Update rule.
    pub optimizer: OptimizerKind,
    /// Learning rate; `None`: found by a range test ([`find_lr`]).
    pub lr: Option<f64>,
    /// Most passes over the training split (early stopping usually ends
    /// the run sooner).
    pub epochs: usize,
    /// Examples per update; `None`: [`auto_batch`] of the training split.
    pub batch: Option<usize>,
    /// Loss.
    pub loss: Loss,
    /// Stop after this many epochs without a better validation loss; `None`:
    /// [`auto_patience`] of `epochs`; 0: never stop early.
    pub patience: Option<usize>,
    /// Seeds weights and batch order.
    pub seed: u64,
    /// Flip and shift training images at random each epoch ([`Augment`]).
    pub augment: bool,
}

/// One epoch's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Epoch {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Loss on the validation split (NaN without one).
    pub val_loss: f64,
    /// Accuracy (classification) or R² (regression) on the validation split.
    pub val_metric: f64,
}

/// Figures on held-out examples.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Metrics {
    /// Classification.
    Class {
        /// Fraction right.
        accuracy: f64,
        /// Per class: right among those predicted as it.
        precision: Vec<f64>,
        /// Per class: found among those that are it.
        recall: Vec<f64>,
        /// `confusion[true][predicted]` counts.
        confusion: Vec<Vec<u32>>,
    },
    /// Regression (every target column together).
    Regress {
        /// Mean squared error.
        mse: f64,
        /// Mean absolute error.
        mae: f64,
        /// Coefficient of determination, against each column's mean.
        r2: f64,
    },
}

impl Metrics {
    /// Accuracy or R²: the one figure to watch.
    pub fn headline(&self) -> f64 {
        match self {
            Metrics::Class { accuracy, .. } => *accuracy,
            Metrics::Regress { r2, .. } => *r2,
        }
    }

    /// Scores `outputs` (logits or values, one row per example) against `y`.
    pub fn of(outputs: &[Vec<f32>], y: &Targets, classes: usize) -> Metrics {
        match y {
            Targets::Class(truth) => {
                let mut confusion = vec![vec![0u32; classes]; classes];
                for (o, &t) in outputs.iter().zip(truth) {
                    confusion[t as usize][argmax(o)] += 1;
                }
                let right: u32 = (0..classes).map(|c| confusion[c][c]).sum();
                let ratio = |a: u32, b: u32| if b == 0 { 0.0 } else { a as f64 / b as f64 };
                Metrics::Class {
                    accuracy: ratio(right, truth.len() as u32),
                    precision: (0..classes)
                        .map(|c| {
                            ratio(confusion[c][c], (0..classes).map(|t| confusion[t][c]).sum())
                        })
                        .collect(),
                    recall: (0..classes)
                        .map(|c| ratio(confusion[c][c], confusion[c].iter().sum()))
                        .collect(),
                    confusion,
                }
            }
            Targets::Values(truth) => {
                let cols = truth.first().map_or(0, Vec::len);
                let n = truth.len().max(1) as f64;
                let means: Vec<f64> = (0..cols)
                    .map(|j| truth.iter().map(|r| r[j] as f64).sum::<f64>() / n)
                    .collect();
                let (mut se, mut ae, mut tot) = (0.0, 0.0, 0.0);
                for (o, t) in outputs.iter().zip(truth) {
                    for j in 0..cols {
                        let d = (o[j] - t[j]) as f64;
                        se += d * d;
                        ae += d.abs();
                        tot += (t[j] as f64 - means[j]).powi(2);
                    }
                }
                let count = n * cols.max(1) as f64;
                Metrics::Regress {
                    mse: se / count,
                    mae: ae / count,
                    r2: if tot > 0.0 { 1.0 - se / tot } else { 0.0 },
                }
            }
        }
    }
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
        .0
}

fn candle(e: candle_core::Error) -> HostError {
    HostError::Train(e.to_string())
}

/// Targets as the loss wants them: class ids (u32) for cross-entropy,
/// one-hot rows for MSE on classes, values for regression.
fn target_tensor(y: &Targets, loss: Loss, classes: usize) -> Result<Tensor, HostError> {
    let dev = Device::Cpu;
    match (y, loss) {
        (Targets::Class(c), Loss::CrossEntropy) => {
            Tensor::from_vec(c.clone(), c.len(), &dev).map_err(candle)
        }
        (Targets::Class(c), Loss::Mse) => {
            let mut hot = vec![0f32; c.len() * classes];
            for (i, &k) in c.iter().enumerate() {
                hot[i * classes + k as usize] = 1.0;
            }
            Tensor::from_vec(hot, (c.len(), classes), &dev).map_err(candle)
        }
        (Targets::Values(v), Loss::Mse) => {
            let cols = v.first().map_or(0, Vec::len);
            Tensor::from_vec(v.concat(), (v.len(), cols), &dev).map_err(candle)
        }
        (Targets::Values(_), Loss::CrossEntropy) => Loss::for_task(Some(loss), Task::Regress)
            .and_then(|_| {
                Err(HostError::Train(
                    "cross-entropy on regression targets".into(),
                ))
            }),
    }
}

fn loss_of(
    out: &Tensor,
    target: &Tensor,
    loss: Loss,
    classify: bool,
) -> candle_core::Result<Tensor> {
    match loss {
        Loss::CrossEntropy => candle_nn::loss::cross_entropy(out, target),
        Loss::Mse if classify => {
            candle_nn::loss::mse(&candle_nn::ops::softmax(out, D::Minus1)?, target)
        }
        Loss::Mse => candle_nn::loss::mse(out, target),
    }
}

/// A trained network and how it got there.
#[derive(Debug)]
pub struct Fitted {
    /// The network (best validation epoch's weights when there is a
    /// validation split).
    pub net: Net,
    /// Standardization from the training split.
    pub mean: Vec<f32>,
    /// Standard deviations to go with `mean`.
    pub std: Vec<f32>,
    /// Every epoch run.
    pub history: Vec<Epoch>,
    /// The epoch whose weights were kept.
    pub best_epoch: usize,
    /// True when early stopping ended the run before the epoch ceiling.
    pub stopped_early: bool,
}

impl Fitted {
    /// Whether the run converged, and what to change when it did not. A run
    /// that early stopping ended did; one that hit the ceiling did not when
    /// its best epoch was in the last tenth, or (with no validation split)
    /// when its training loss still fell by more than 1 % over that tenth.
    pub fn convergence(&self) -> (bool, Option<String>) {
        let run = self.history.len();
        if self.stopped_early || run == 0 {
            return (true, None);
        }
        let tail = (run / 10).max(1);
        let has_val = self.history.iter().any(|e| e.val_loss.is_finite());
        let still_improving = if has_val {
            self.best_epoch + tail > run
        } else {
            let mean = |h: &[Epoch]| h.iter().map(|e| e.train_loss).sum::<f64>() / h.len() as f64;
            let last = mean(&self.history[run - tail..]);
            let before = mean(&self.history[run.saturating_sub(2 * tail)..run - tail]);
            last < 0.99 * before
        };
        if !still_improving {
            return (true, None);
        }
        (
            false,
            Some(format!(
                "training did not converge: the model was still improving when it stopped \
                 (best epoch {} of {run}); raise --epochs, or the learning rate with --lr",
                self.best_epoch
            )),
        )
    }

    /// Network outputs (logits or values) for raw examples.
    pub fn outputs(&self, x: &[Vec<f32>], shape: &[usize]) -> Result<Vec<Vec<f32>>, HostError> {
        self.net.outputs(x, shape, &self.mean, &self.std, false)
    }
}

/// Fits a network on `train` examples of `data`, watching `val`.
/// `progress` is told each finished epoch.
pub fn fit(
    data: &Dataset,
    train: &[usize],
    val: &[usize],
    opts: &FitOptions,
    progress: &mut dyn FnMut(&Epoch),
) -> Result<Fitted, HostError> {
    let classify = matches!(data.y, Targets::Class(_));
    let classes = data.outputs();
    let (xv, yv) = data.select(val);
    let Start {
        net,
        x: x_train,
        y: y_train,
        mut rng,
        n,
        mean,
        std,
    } = Start::new(data, train, opts)?;
    let x_val = if xv.is_empty() {
        None
    } else {
        Some((
            batch_tensor(&xv, &data.shape, &mean, &std)?,
            target_tensor(&yv, opts.loss, classes)?,
        ))
    };
    let mut optimizer = optimizer(&net, opts.optimizer, opts.lr.unwrap_or(1e-3))?;
    let augment = if opts.augment {
        Some(Augment::new(&x_train)?)
    } else {
        None
    };
    let batch = opts.batch.unwrap_or_else(|| auto_batch(train.len())).max(1);
    let patience = opts.patience.unwrap_or_else(|| auto_patience(opts.epochs));
    let mut history = Vec::new();
    let (mut best_loss, mut best_epoch, mut best) = (f64::INFINITY, 0, None);
    for epoch in 1..=opts.epochs {
        let order = shuffled(n, &mut rng);
        let mut total = 0.0;
        let mut batches = 0;
        for chunk in order.chunks(batch) {
            total += train_step(
                &net,
                optimizer.as_mut(),
                &x_train,
                &y_train,
                chunk,
                opts.loss,
                classify,
                augment.as_ref().map(|a| (a, &mut rng)),
            )?;
            batches += 1;
        }
        let train_loss = total / batches.max(1) as f64;
        if !train_loss.is_finite() {
            return Err(HostError::Train(format!(
                "epoch {epoch}: the loss is {train_loss}: lower --lr"
            )));
        }
        let (val_loss, val_metric) = match &x_val {
            Some((xv_t, yv_t)) => {
                let out = net.forward(xv_t).map_err(candle)?;
                let l = loss_of(&out, yv_t, opts.loss, classify)
                    .and_then(|t| t.to_dtype(DType::F64))
                    .and_then(|t| t.to_scalar::<f64>())
                    .map_err(candle)?;
                let rows = out.to_vec2::<f32>().map_err(candle)?;
                (l, Metrics::of(&rows, &yv, classes).headline())
            }
            None => (f64::NAN, f64::NAN),
        };
        let e = Epoch {
            epoch,
            train_loss,
            val_loss,
            val_metric,
        };
        progress(&e);
        history.push(e);
        if x_val.is_some() {
            // Gains under 0.1 % (or 1e-4 when the loss is near zero, as on
            // separable data, where it shrinks forever) are noise: counting
            // them would keep a run that has converged going to the ceiling.
            let better = if best_loss.is_finite() {
                val_loss < best_loss - (best_loss * MIN_GAIN).max(MIN_GAIN_ABS)
            } else {
                val_loss.is_finite()
            };
            if better {
                best_loss = val_loss;
                best_epoch = epoch;
                best = Some(net.snapshot()?);
            } else if patience > 0 && epoch - best_epoch >= patience {
                break;
            }
        } else {
            best_epoch = epoch;
        }
    }
    if let Some(b) = best {
        net.restore(&b)?;
    }
    let stopped_early = history.len() < opts.epochs;
    Ok(Fitted {
        net,
        mean,
        std,
        history,
        best_epoch,
        stopped_early,
    })
}

/// Mean and standard deviation of the headline metric over `k` folds of
/// `pool` (each fold validates a model trained on the others).
pub fn kfold(
    data: &Dataset,
    pool: &[usize],
    k: usize,
    opts: &FitOptions,
) -> Result<(f64, f64, Vec<f64>), HostError> {
    if k < 2 || k > pool.len() {
        return Err(HostError::Input {
            file: "--kfold".into(),
            message: format!(
                "expected 2 to {} folds for {} training examples, found {k}",
                pool.len(),
                pool.len()
            ),
        });
    }
    let idx = shuffled(pool.len(), &mut Rng::new(opts.seed ^ 0x6b_666f_6c64));
    let mut scores = Vec::new();
    for f in 0..k {
        let (lo, hi) = (f * pool.len() / k, (f + 1) * pool.len() / k);
        let val: Vec<usize> = idx[lo..hi].iter().map(|&i| pool[i]).collect();
        let train: Vec<usize> = idx[..lo]
            .iter()
            .chain(&idx[hi..])
            .map(|&i| pool[i])
            .collect();
        let fitted = fit(data, &train, &val, opts, &mut |_| {})?;
        let (xv, yv) = data.select(&val);
        let out = fitted.outputs(&xv, &data.shape)?;
        scores.push(Metrics::of(&out, &yv, data.outputs()).headline());
    }
    let mean = scores.iter().sum::<f64>() / k as f64;
    let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / k as f64;
    Ok((mean, var.sqrt(), scores))
}

/// The train/validation/test split, stratified by class for classification.
pub fn plan_splits(
    data: &Dataset,
    val: f64,
    test: f64,
    seed: u64,
) -> Result<super::split::Splits, HostError> {
    let classes = match &data.y {
        Targets::Class(c) => Some(c.as_slice()),
        Targets::Values(_) => None,
    };
    split(data.x.len(), classes, val, test, seed).map_err(|message| HostError::Input {
        file: "--val-split/--test-split".into(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_a_known_confusion() {
        let out = vec![
            vec![0.9, 0.1],
            vec![0.2, 0.8],
            vec![0.6, 0.4],
            vec![0.3, 0.7],
        ];
        let m = Metrics::of(&out, &Targets::Class(vec![0, 1, 1, 1]), 2);
        assert_eq!(
            m,
            Metrics::Class {
                accuracy: 0.75,
                precision: vec![0.5, 1.0],
                recall: vec![1.0, 2.0 / 3.0],
                confusion: vec![vec![1, 0], vec![1, 2]],
            }
        );
        let r = Metrics::of(
            &[vec![1.0], vec![3.0]],
            &Targets::Values(vec![vec![1.0], vec![2.0]]),
            1,
        );
        assert_eq!(
            r,
            Metrics::Regress {
                mse: 0.5,
                mae: 0.5,
                r2: 1.0 - 1.0 / 0.5
            }
        );
    }
}
