//! One stimulus's model output to one row of a layer's file: pool space at each needed step
//! (with the same kernels the server uses, see [`crate::pool`]), then average the steps of each
//! time bin.

use super::args::SpatialPool;
use super::plan::{LayerPlan, TimeBin};
use crate::pool::{avg_pool_step, pool_step, Pool};

/// How a source hands over a layer's values at one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepForm {
    /// The layer's own `[C, H, W]` (or `[K]` for logits).
    Raw,
    /// Already pooled to `[C]` by the server with this plan's `mean` or `max`.
    Pooled,
}

/// What pooling, if any, a server can do for `pool` with the same result: `mean` and `max`.
pub fn server_pool(pool: SpatialPool) -> Pool {
    match pool {
        SpatialPool::Mean => Pool::Mean,
        SpatialPool::Max => Pool::Max,
        SpatialPool::None | SpatialPool::Avg(_) => Pool::None,
    }
}

/// Appends one row (`[bins, ...]`) of `layer` to `out`. `step(t)` gives the values at model step
/// `t` in `form`.
pub fn reduce_row<'a>(
    layer: &LayerPlan,
    bins: &[TimeBin],
    pool: SpatialPool,
    form: StepForm,
    step: impl Fn(usize) -> &'a [f32],
    out: &mut Vec<f32>,
) {
    let mut pooled = Vec::new();
    for bin in bins {
        let start = out.len();
        for (i, &t) in bin.steps.iter().enumerate() {
            if i == 0 {
                // Straight into the row: a bin of one step (the default) copies each value once.
                pool_into(layer, pool, form, step(t), out);
                continue;
            }
            pooled.clear();
            pool_into(layer, pool, form, step(t), &mut pooled);
            out[start..]
                .iter_mut()
                .zip(&pooled)
                .for_each(|(acc, v)| *acc += v);
        }
        if bin.steps.len() > 1 {
            let n = bin.steps.len() as f32;
            out[start..].iter_mut().for_each(|v| *v /= n);
        }
    }
}

fn pool_into(
    layer: &LayerPlan,
    pool: SpatialPool,
    form: StepForm,
    values: &[f32],
    out: &mut Vec<f32>,
) {
    let (Some(h), Some(w)) = (layer.model_height, layer.model_width) else {
        // Logits: nothing spatial.
        out.extend_from_slice(values);
        return;
    };
    match (form, pool) {
        (StepForm::Pooled, _) | (StepForm::Raw, SpatialPool::None) => out.extend_from_slice(values),
        (StepForm::Raw, SpatialPool::Mean | SpatialPool::Max) => {
            pool_step(values, h * w, server_pool(pool), out)
        }
        (StepForm::Raw, SpatialPool::Avg(k)) => avg_pool_step(values, layer.channels, h, w, k, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::args::Dtype;

    fn layer(pool: SpatialPool) -> LayerPlan {
        let (h, w) = match pool {
            SpatialPool::None => (Some(2), Some(2)),
            SpatialPool::Avg(_) => (Some(1), Some(1)),
            _ => (None, None),
        };
        let mut shape = vec![1, 2, 2];
        if let (Some(h), Some(w)) = (h, w) {
            shape.extend([h, w]);
        }
        LayerPlan {
            name: "conv1".into(),
            file: "conv1.npy".into(),
            shape,
            dtype: Dtype::F32,
            dims: vec![],
            region: None,
            channels: 2,
            height: h,
            width: w,
            model_height: Some(2),
            model_width: Some(2),
            first_driven_step: 0,
        }
    }

    #[test]
    fn bins_average_pooled_steps() {
        // Three steps of a [2, 2, 2] layer: step t holds t+1 in channel 0 and -(t+1) in channel 1.
        let steps: Vec<Vec<f32>> = (0..3)
            .map(|t| {
                let v = (t + 1) as f32;
                vec![v, v, v, v, -v, -v, -v, 3.0 * -v]
            })
            .collect();
        let bins = vec![
            TimeBin {
                start_ms: 0.0,
                end_ms: 10.0,
                steps: vec![0],
            },
            TimeBin {
                start_ms: 10.0,
                end_ms: 30.0,
                steps: vec![1, 2],
            },
        ];
        let raw = |pool: SpatialPool, bins: &[TimeBin]| {
            let mut out = Vec::new();
            reduce_row(
                &layer(pool),
                bins,
                pool,
                StepForm::Raw,
                |t| &steps[t],
                &mut out,
            );
            out
        };
        assert_eq!(raw(SpatialPool::Mean, &bins), [1.0, -1.5, 2.5, -3.75]);
        assert_eq!(raw(SpatialPool::Max, &bins), [1.0, -1.0, 2.5, -2.5]);
        assert_eq!(raw(SpatialPool::Avg(1), &bins), [1.0, -1.5, 2.5, -3.75]);
        assert_eq!(raw(SpatialPool::None, &bins[..1]), steps[0]);
        // What a server pooled is only averaged over time.
        let pooled: Vec<Vec<f32>> = vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 7.0]];
        let mut out = Vec::new();
        reduce_row(
            &layer(SpatialPool::Mean),
            &bins,
            SpatialPool::Mean,
            StepForm::Pooled,
            |t| &pooled[t],
            &mut out,
        );
        assert_eq!(out, [1.0, 2.0, 4.0, 5.5]);
    }
}
