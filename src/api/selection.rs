//! What part of a model's time course a request wants: which layers, which timesteps, and how
//! to pool space. Parsed from the request's options and checked against the model's metadata, so
//! an unknown layer or an out-of-range step is a 400 before any work is queued.

use super::error::{quote, ApiError};
pub use crate::gather::Selection;
use crate::model::{ModelMetadata, LOGITS_NAME};
pub use crate::pool::Pool;

fn out_of_range(msg: String) -> ApiError {
    ApiError::bad_request("step_out_of_range", msg)
}

/// `all`, `a:b` (half-open, like Python; either end may be omitted), or `1,3,5`.
pub fn parse_steps(spec: &str, steps: usize) -> Result<Vec<usize>, ApiError> {
    let spec = spec.trim();
    if spec.is_empty() || spec == "all" {
        return Ok((0..steps).collect());
    }
    let num = |s: &str, default: usize| -> Result<usize, ApiError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(default);
        }
        s.parse().map_err(|_| {
            ApiError::bad_request(
                "bad_steps",
                format!("steps {}: {} is not a step index", quote(spec), quote(s)),
            )
        })
    };
    let list = if let Some((a, b)) = spec.split_once(':') {
        let (a, b) = (num(a, 0)?, num(b, steps)?);
        if a >= b {
            return Err(ApiError::bad_request(
                "bad_steps",
                format!("steps {} is empty", quote(spec)),
            ));
        }
        if b > steps {
            return Err(out_of_range(format!(
                "steps {} ends past the last step (the model runs steps 0..{steps})",
                quote(spec)
            )));
        }
        (a..b).collect()
    } else {
        // A list names each step at most once, so it can be no longer than the model's steps;
        // counted before collecting, so `1,1,1,...` costs nothing however long it is.
        let count = spec.split(',').count();
        if count > steps {
            return Err(ApiError::bad_request(
                "bad_steps",
                format!("steps lists {count} steps; the model runs {steps}"),
            ));
        }
        let list = spec
            .split(',')
            .map(|s| num(s, usize::MAX))
            .collect::<Result<Vec<_>, _>>()?;
        list
    };
    if let Some(bad) = list.iter().find(|&&t| t >= steps) {
        return Err(out_of_range(format!(
            "step {bad} is out of range: the model runs steps 0..{steps} (0 to {})",
            steps - 1
        )));
    }
    // Repeats would multiply the answer, and an npz answer has no value limit.
    let mut seen = vec![false; steps];
    for &t in &list {
        if std::mem::replace(&mut seen[t], true) {
            return Err(ApiError::bad_request(
                "bad_steps",
                format!("steps {} names step {t} more than once", quote(spec)),
            ));
        }
    }
    Ok(list)
}

/// `a:b` in milliseconds → the steps whose start time `t * step_ms` lies in `[a, b)`.
pub fn parse_window_ms(spec: &str, steps: usize, step_ms: f64) -> Result<Vec<usize>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "bad_window",
            format!(
                "window_ms {} must be START:END in milliseconds",
                quote(spec)
            ),
        )
    };
    let (a, b) = spec.split_once(':').ok_or_else(bad)?;
    let a: f64 = a.trim().parse().map_err(|_| bad())?;
    let b: f64 = b.trim().parse().map_err(|_| bad())?;
    if a.is_nan() || b.is_nan() {
        return Err(bad());
    }
    let list: Vec<usize> = (0..steps)
        .filter(|&t| {
            let start = t as f64 * step_ms;
            start >= a && start < b
        })
        .collect();
    if list.is_empty() {
        return Err(out_of_range(format!(
            "window_ms {} holds no step: steps start every {step_ms} ms from 0 to {} ms",
            quote(spec),
            (steps - 1) as f64 * step_ms
        )));
    }
    Ok(list)
}

/// Layer names: `all` (every layer, not the logits), or a comma-separated list that may include
/// `logits`.
pub fn parse_layers(spec: Option<&str>, meta: &ModelMetadata) -> Result<Vec<String>, ApiError> {
    let spec = spec.map(str::trim).unwrap_or("all");
    if spec.is_empty() || spec == "all" {
        return Ok(meta.layers.iter().map(|l| l.name.clone()).collect());
    }
    let mut out: Vec<String> = Vec::new();
    let names = spec.split(',').map(str::trim).filter(|s| !s.is_empty());
    let expanded = names.flat_map(|n| -> Vec<&str> {
        if n == "all" {
            meta.layers.iter().map(|l| l.name.as_str()).collect()
        } else {
            vec![n]
        }
    });
    for name in expanded {
        if name != LOGITS_NAME && meta.layer(name).is_none() {
            let known: Vec<&str> = meta.layers.iter().map(|l| l.name.as_str()).collect();
            return Err(ApiError::bad_request(
                "unknown_layer",
                format!(
                    "layer {} does not exist (layers: {}, or logits)",
                    quote(name),
                    known.join(", ")
                ),
            ));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

impl Selection {
    pub fn parse(
        meta: &ModelMetadata,
        layers: Option<&str>,
        steps: Option<&str>,
        window_ms: Option<&str>,
        pool: Option<Pool>,
    ) -> Result<Self, ApiError> {
        let steps = match (steps, window_ms) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "bad_steps",
                    "give either steps or window_ms, not both",
                ))
            }
            (_, Some(w)) => parse_window_ms(w, meta.time.steps, meta.time.step_ms)?,
            (s, None) => parse_steps(s.unwrap_or("all"), meta.time.steps)?,
        };
        Ok(Self {
            layers: parse_layers(layers, meta)?,
            steps,
            pool: pool.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ModelMetadata {
        ModelMetadata::from_json(&crate::model::metadata::tests::sample_json()).unwrap()
    }

    #[test]
    fn steps_forms() {
        assert_eq!(parse_steps("all", 4).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_steps("1:3", 4).unwrap(), vec![1, 2]);
        assert_eq!(parse_steps(":2", 4).unwrap(), vec![0, 1]);
        assert_eq!(parse_steps("2:", 4).unwrap(), vec![2, 3]);
        assert_eq!(parse_steps("3,0", 4).unwrap(), vec![3, 0]);
        assert_eq!(parse_steps("4", 4).unwrap_err().code(), "step_out_of_range");
        assert_eq!(
            parse_steps("0:5", 4).unwrap_err().code(),
            "step_out_of_range"
        );
        assert_eq!(parse_steps("x", 4).unwrap_err().code(), "bad_steps");
        assert_eq!(parse_steps("3:1", 4).unwrap_err().code(), "bad_steps");
    }

    #[test]
    fn hostile_step_specs_are_refused_without_building_them() {
        let huge = format!("0:{}", u64::MAX);
        assert_eq!(
            parse_steps(&huge, 4).unwrap_err().code(),
            "step_out_of_range"
        );
        assert_eq!(
            parse_steps(&format!("{}", u64::MAX), 4).unwrap_err().code(),
            "step_out_of_range"
        );
        assert_eq!(
            parse_steps("18446744073709551616", 4).unwrap_err().code(),
            "bad_steps"
        );
        // Repeats would multiply the answer; a list longer than the model is refused uncounted.
        assert_eq!(parse_steps("1,1", 4).unwrap_err().code(), "bad_steps");
        let repeated = vec!["1"; 1_000_000].join(",");
        assert_eq!(parse_steps(&repeated, 4).unwrap_err().code(), "bad_steps");
        assert_eq!(parse_steps("3,0,2,1", 4).unwrap(), vec![3, 0, 2, 1]);
        assert_eq!(
            parse_window_ms("NaN:10", 4, 10.0).unwrap_err().code(),
            "bad_window"
        );
        assert_eq!(
            parse_window_ms("0:NaN", 4, 10.0).unwrap_err().code(),
            "bad_window"
        );
        assert_eq!(
            parse_window_ms("-inf:inf", 4, 10.0).unwrap(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            parse_window_ms("1e308:1e309", 4, 10.0).unwrap_err().code(),
            "step_out_of_range"
        );
    }

    #[test]
    fn window_in_milliseconds() {
        assert_eq!(parse_window_ms("10:30", 4, 10.0).unwrap(), vec![1, 2]);
        assert_eq!(
            parse_window_ms("0:1000", 4, 10.0).unwrap(),
            vec![0, 1, 2, 3]
        );
        assert!(parse_window_ms("100:200", 4, 10.0).is_err());
        assert!(parse_window_ms("abc", 4, 10.0).is_err());
    }

    #[test]
    fn layers_are_checked() {
        let m = meta();
        assert_eq!(parse_layers(None, &m).unwrap(), vec!["conv1", "conv2"]);
        assert_eq!(
            parse_layers(Some("conv2,logits,conv2"), &m).unwrap(),
            vec!["conv2", "logits"]
        );
        assert_eq!(
            parse_layers(Some("conv9"), &m).unwrap_err().code(),
            "unknown_layer"
        );
        let s = Selection::parse(&m, Some("conv1"), None, Some("10:20"), Some(Pool::Mean)).unwrap();
        assert_eq!((s.steps, s.pool), (vec![1], Pool::Mean));
    }
}
