//! A request's chosen layers x timesteps out of the engine's per-stimulus results, raw or
//! spatially pooled (with [`crate::pool`]), flattened C-order: the values an activations answer
//! encodes. No HTTP here: the parsing of a [`Selection`] and the encodings live in `api`.

use crate::engine::ItemResult;
use crate::model::ModelInfo;
use crate::pool::{pool_step, Pool};

/// What part of a model's time course a request wants: which layers, which timesteps, and how
/// to pool space (parsed and checked against the model by `api::selection`).
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub layers: Vec<String>,
    pub steps: Vec<usize>,
    pub pool: Pool,
}

/// A model's results do not match its own metadata: a server fault, not the client's.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("no shape for {0}")]
    NoShape(String),
    #[error("the batch has no output {0}")]
    NoOutput(String),
}

/// One layer's selected values across the request's stimuli, flattened C-order.
pub struct Gathered {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Every selected layer of `results`, gathered.
pub fn gather(
    info: &ModelInfo,
    results: &[ItemResult],
    sel: &Selection,
) -> Result<Vec<Gathered>, GatherError> {
    sel.layers
        .iter()
        .map(|name| {
            let layout = LayerLayout::new(info, sel, name, results.len())?;
            gather_layer(results, sel, name, layout)
        })
        .collect()
}

/// How many values the answer holds for `stimuli` stimuli, known before anything runs.
pub fn answer_values(info: &ModelInfo, sel: &Selection, stimuli: usize) -> usize {
    sel.layers
        .iter()
        .filter_map(|l| info.item_shape(l))
        .map(|s| answer_shape(&s, sel, stimuli).iter().product::<usize>())
        .sum()
}

/// One layer's item shape `[T, ...]`, values per step, and answer shape.
pub struct LayerLayout {
    item_shape: Vec<usize>,
    per_step: usize,
    pub shape: Vec<usize>,
}

impl LayerLayout {
    pub fn new(
        info: &ModelInfo,
        sel: &Selection,
        name: &str,
        stimuli: usize,
    ) -> Result<Self, GatherError> {
        let item_shape = info
            .item_shape(name)
            .ok_or_else(|| GatherError::NoShape(name.to_string()))?;
        let per_step = item_shape[1..].iter().product();
        let shape = answer_shape(&item_shape, sel, stimuli);
        Ok(Self {
            item_shape,
            per_step,
            shape,
        })
    }

    /// Pooled answers keep only the channel axis of a [T, C, H, W] layer.
    pub fn pooled(&self) -> bool {
        self.shape.len() < self.item_shape.len() + 1
    }

    /// Step `t` of one item's `[T, ...]` values.
    pub fn step<'a>(&self, values: &'a [f32], t: usize) -> &'a [f32] {
        &values[t * self.per_step..(t + 1) * self.per_step]
    }
}

/// One stimulus's `[T, ...]` values of the output `name`.
pub fn layer_values<'a>(r: &'a ItemResult, name: &str) -> Result<&'a [f32], GatherError> {
    r.output(name)
        .ok_or_else(|| GatherError::NoOutput(name.to_string()))
}

/// The selected steps of one layer for every stimulus, pooled if the layout says so.
pub fn gather_layer(
    results: &[ItemResult],
    sel: &Selection,
    name: &str,
    layout: LayerLayout,
) -> Result<Gathered, GatherError> {
    let pooled = layout.pooled();
    // Spatial plane of one channel (only read when pooling, i.e. for [T, C, H, W] layers).
    let plane = layout.item_shape[2..].iter().product::<usize>();
    let mut data = Vec::with_capacity(layout.shape.iter().product());
    for r in results {
        let values = layer_values(r, name)?;
        for &t in &sel.steps {
            let step = layout.step(values, t);
            let pool = if pooled { sel.pool } else { Pool::None };
            pool_step(step, plane, pool, &mut data);
        }
    }
    Ok(Gathered {
        name: name.to_string(),
        shape: layout.shape,
        data,
    })
}

/// Shape of one output in the answer: `[stimuli, steps, ...]` with the item's per-step axes, or
/// only its channels when space is pooled (logits, `[T, K]`, are never pooled).
fn answer_shape(item_shape: &[usize], sel: &Selection, stimuli: usize) -> Vec<usize> {
    let mut shape = vec![stimuli, sel.steps.len()];
    if sel.pool != Pool::None && item_shape.len() == 4 {
        shape.push(item_shape[1]);
    } else {
        shape.extend_from_slice(&item_shape[1..]);
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(pool: Pool) -> Selection {
        Selection {
            layers: vec![],
            steps: vec![1, 3],
            pool,
        }
    }

    #[test]
    fn pooled_answers_keep_only_channels() {
        let conv = [4, 2, 3, 3];
        assert_eq!(answer_shape(&conv, &sel(Pool::None), 5), [5, 2, 2, 3, 3]);
        assert_eq!(answer_shape(&conv, &sel(Pool::Mean), 5), [5, 2, 2]);
        // Logits have no space to pool.
        assert_eq!(answer_shape(&[4, 10], &sel(Pool::Max), 1), [1, 2, 10]);
    }
}
