//! Readout rules (convrnn-spec.md section 3): which timestep's logits answer "what is it".

use super::metadata::{ModelMetadata, ReadoutRule};

/// Numerically stable softmax of `logits * beta`.
pub fn softmax(logits: &[f32], beta: f32) -> Vec<f32> {
    let max = logits
        .iter()
        .map(|v| v * beta)
        .fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|v| (v * beta - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The step whose logits the model's readout rule selects, given all `[T, K]` logits.
///
/// - `last`: T-1.
/// - `max_conf`: from the readout's first driven step on, the step whose softmax(beta * logits)
///   has the highest top probability.
/// - `threshold`: the first such step whose top probability (beta = 1) reaches the threshold,
///   else the most confident step.
pub fn readout_step(meta: &ModelMetadata, logits: &[f32]) -> usize {
    let k = meta.labels.len();
    let steps = logits.len() / k;
    let last = steps.saturating_sub(1);
    let first = meta
        .readout
        .first_step
        .unwrap_or(0)
        .max(meta.readout_first_driven_step())
        .min(last);
    let confidence = |t: usize, beta: f32| -> f32 {
        softmax(&logits[t * k..(t + 1) * k], beta)
            .into_iter()
            .fold(0.0, f32::max)
    };
    let most_confident = |beta: f32| -> usize {
        (first..steps)
            .map(|t| (t, confidence(t, beta)))
            // Ties go to the earlier step, like argmax.
            .fold((last, f32::NEG_INFINITY), |best, cur| {
                if cur.1 > best.1 {
                    cur
                } else {
                    best
                }
            })
            .0
    };
    match meta.readout.rule {
        ReadoutRule::MaxConf => most_confident(meta.readout.beta.unwrap_or(1.0)),
        ReadoutRule::Threshold => {
            let thr = meta.readout.threshold.unwrap_or(0.9);
            (first..steps)
                .find(|&t| confidence(t, 1.0) >= thr)
                .unwrap_or_else(|| most_confident(1.0))
        }
        ReadoutRule::Last => last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(rule: &str) -> ModelMetadata {
        let mut v: serde_json::Value =
            serde_json::from_str(&super::super::metadata::tests::sample_json()).unwrap();
        v["readout"] = serde_json::json!({"rule": rule, "threshold": 0.9, "beta": 1.0});
        ModelMetadata::from_json(&v.to_string()).unwrap()
    }

    #[test]
    fn softmax_sums_to_one_and_is_stable() {
        let p = softmax(&[1000.0, 1000.0, -1000.0], 1.0);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[0] - 0.5).abs() < 1e-6 && p[2] == 0.0);
    }

    #[test]
    fn rules_pick_the_expected_step() {
        // 4 steps x 3 classes; readout first driven at step 2 (sample has conv2 at step 1).
        let logits = [
            9.0, 0.0, 0.0, // step 0: very confident but before the readout is driven
            0.0, 0.0, 0.0, //
            3.0, 0.0, 0.0, // step 2: p ~ 0.91
            5.0, 0.0, 0.0, // step 3: p ~ 0.987
        ];
        assert_eq!(readout_step(&meta("last"), &logits), 3);
        assert_eq!(readout_step(&meta("max_conf"), &logits), 3);
        assert_eq!(readout_step(&meta("threshold"), &logits), 2);
        // A later window start, as the export writes for the authors' decoders.
        let mut late = meta("threshold");
        late.readout.first_step = Some(3);
        assert_eq!(readout_step(&late, &logits), 3);
        late.readout.rule = ReadoutRule::MaxConf;
        let early = [9.0, 0.0, 0.0, 0.0, 0.0, 0.0, 7.0, 0.0, 0.0, 5.0, 0.0, 0.0];
        assert_eq!(readout_step(&meta("max_conf"), &early), 2);
        assert_eq!(readout_step(&late, &early), 3);
    }
}
