//! Spatial pooling of one timestep of a layer's output (`[C, H, W]`, C-order). One
//! implementation, so that the HTTP answers and `convrnn-serve extract` (in-process or through a
//! server) give bit-identical numbers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Spatial pooling of layer outputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// Full `[C, H, W]` maps.
    #[default]
    None,
    /// Mean over H and W: `[C]`.
    Mean,
    /// Max over H and W: `[C]`.
    Max,
}

/// Appends `step` (`channels` planes of `plane` values each) pooled by `pool` to `out`: the values
/// unchanged for `None`, one value per channel for `Mean` and `Max`.
pub fn pool_step(step: &[f32], plane: usize, pool: Pool, out: &mut Vec<f32>) {
    match pool {
        Pool::None => out.extend_from_slice(step),
        Pool::Mean => out.extend(
            step.chunks(plane.max(1))
                .map(|c| c.iter().sum::<f32>() / plane as f32),
        ),
        Pool::Max => out.extend(
            step.chunks(plane.max(1))
                .map(|c| c.iter().copied().fold(f32::NEG_INFINITY, f32::max)),
        ),
    }
}

/// The `k x k` grid an `[H, W]` map is average-pooled to, as `(rows, cols)`: a map already that
/// small keeps its size.
pub fn avg_grid(height: usize, width: usize, k: usize) -> (usize, usize) {
    (height.min(k), width.min(k))
}

/// Cell `i` of `n` over an axis of `len`: `[floor(i*len/n), ceil((i+1)*len/n))`, as PyTorch's
/// `adaptive_avg_pool2d` divides it.
fn cell(i: usize, n: usize, len: usize) -> std::ops::Range<usize> {
    (i * len / n)..((i + 1) * len).div_ceil(n)
}

/// Appends `step` (`[C, H, W]`) average-pooled to `[C, h, w]` with `(h, w) = avg_grid(H, W, k)`.
pub fn avg_pool_step(
    step: &[f32],
    channels: usize,
    height: usize,
    width: usize,
    k: usize,
    out: &mut Vec<f32>,
) {
    let (gh, gw) = avg_grid(height, width, k);
    let plane = height * width;
    for c in 0..channels {
        let map = &step[c * plane..(c + 1) * plane];
        for gy in 0..gh {
            let rows = cell(gy, gh, height);
            for gx in 0..gw {
                let cols = cell(gx, gw, width);
                let mut sum = 0.0f32;
                for y in rows.clone() {
                    sum += map[y * width + cols.start..y * width + cols.end]
                        .iter()
                        .sum::<f32>();
                }
                out.push(sum / (rows.len() * cols.len()) as f32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_max_per_channel() {
        let step = [1.0, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -6.0];
        let mut out = Vec::new();
        pool_step(&step, 4, Pool::Mean, &mut out);
        pool_step(&step, 4, Pool::Max, &mut out);
        pool_step(&step[..2], 4, Pool::None, &mut out);
        assert_eq!(out, [2.5, -3.0, 4.0, -1.0, 1.0, 2.0]);
    }

    #[test]
    fn avg_pool_uneven_cells_like_adaptive_pooling() {
        // One 3x3 channel to 2x2: cells rows/cols [0,2) and [1,3), overlapping like PyTorch's.
        let step: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let mut out = Vec::new();
        avg_pool_step(&step, 1, 3, 3, 2, &mut out);
        assert_eq!(out, [2.0, 3.0, 5.0, 6.0]);
        // A 4x4 map to 2x2 is plain 2x2 blocks; a k above the size keeps the map.
        let step: Vec<f32> = (0..16).map(|v| v as f32).collect();
        out.clear();
        avg_pool_step(&step, 1, 4, 4, 2, &mut out);
        assert_eq!(out, [2.5, 4.5, 10.5, 12.5]);
        out.clear();
        avg_pool_step(&step, 1, 4, 4, 8, &mut out);
        assert_eq!(out, step);
        assert_eq!(avg_grid(2, 3, 4), (2, 3));
    }
}
