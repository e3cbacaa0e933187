//! Presentation schedules: what the model sees at each timestep. The export takes a movie of
//! frames, so the server decides the schedule per request (image on for k steps then blank, an
//! image followed by a mask, a sequence of images), as in the paper's unroll where frame `t`
//! feeds the first layer at step `t`.

use std::sync::Arc;

use crate::engine::{Frame, FrameSource, Stimulus};
use crate::model::metadata::TimeSpec;
use crate::quote::quote;

/// A presentation schedule, applied to the request's images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presentation {
    /// Each image for the model's `image_on_steps`, blank after (the authors' default).
    Default,
    /// Each image for `on_steps`, blank after.
    Flash { on_steps: usize },
    /// Each image for `on_steps`, then the mask image for `mask_steps`, blank after.
    Mask { on_steps: usize, mask_steps: usize },
    /// One stimulus built from all the request's images in the given order and durations;
    /// blank after the last segment.
    Sequence(Vec<Segment>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// Request image `image` (0-based, in request order) for `steps` steps.
    Image {
        image: usize,
        steps: usize,
    },
    Blank {
        steps: usize,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PresentationError {
    #[error("the schedule lasts {total} steps but the model runs {steps}")]
    TooLong { total: usize, steps: usize },
    #[error("on_steps must be at least 1")]
    ZeroOnSteps,
    #[error("presentation=mask needs a mask image (a part or field named `mask`)")]
    MissingMask,
    #[error("a mask image was sent but the presentation is not `mask`")]
    UnexpectedMask,
    #[error("sequence refers to image {image} but the request has {count} images")]
    NoSuchImage { image: usize, count: usize },
    #[error("a sequence must not be empty")]
    EmptySequence,
    /// The request's presentation options do not parse.
    #[error("{0}")]
    Invalid(String),
}

impl Presentation {
    /// Parses the query form: `default`, `flash` (with `on_steps`), `mask` (with `on_steps`,
    /// `mask_steps`), `sequence` (with `sequence=0:3,blank:2,1:5`).
    pub fn from_parts(
        kind: Option<&str>,
        on_steps: Option<usize>,
        mask_steps: Option<usize>,
        sequence: Option<&str>,
        time: &TimeSpec,
    ) -> Result<Self, PresentationError> {
        let invalid = |msg: &str| PresentationError::Invalid(msg.to_string());
        match kind.unwrap_or(if sequence.is_some() {
            "sequence"
        } else if on_steps.is_some() {
            "flash"
        } else {
            "default"
        }) {
            "default" => Ok(Presentation::Default),
            "flash" => Ok(Presentation::Flash {
                on_steps: on_steps.unwrap_or(time.image_on_steps),
            }),
            "mask" => Ok(Presentation::Mask {
                on_steps: on_steps.unwrap_or(time.image_on_steps),
                mask_steps: mask_steps
                    .ok_or_else(|| invalid("presentation=mask needs mask_steps"))?,
            }),
            "sequence" => {
                let text = sequence.ok_or_else(|| {
                    invalid("presentation=sequence needs sequence=IMAGE:STEPS,...")
                })?;
                // Counted before parsing: each segment lasts a step or more, so a sequence of
                // more segments than the model has steps is refused without building it.
                let segments = text.split(',').filter(|s| !s.trim().is_empty()).count();
                if segments > time.steps {
                    return Err(PresentationError::Invalid(format!(
                        "the sequence has {segments} segments but the model runs {} steps",
                        time.steps
                    )));
                }
                Ok(Presentation::Sequence(
                    parse_sequence(text).map_err(PresentationError::Invalid)?,
                ))
            }
            other => Err(PresentationError::Invalid(format!(
                "unknown presentation {} (expected default, flash, mask or sequence)",
                quote(other)
            ))),
        }
    }

    /// How many steps the schedule lasts before the blank padding, saturating at `usize::MAX`
    /// (any such length is refused as too long).
    pub fn schedule_len(&self, time: &TimeSpec) -> usize {
        match self {
            Presentation::Default => time.image_on_steps,
            Presentation::Flash { on_steps } => *on_steps,
            Presentation::Mask {
                on_steps,
                mask_steps,
            } => on_steps.saturating_add(*mask_steps),
            Presentation::Sequence(segments) => segments.iter().fold(0usize, |total, seg| {
                total.saturating_add(match *seg {
                    Segment::Image { steps, .. } | Segment::Blank { steps } => steps,
                })
            }),
        }
    }

    /// Builds the stimuli: one per image, or one in all for a sequence.
    pub fn stimuli(
        &self,
        images: Vec<Frame>,
        mask: Option<Frame>,
        time: &TimeSpec,
    ) -> Result<Vec<Stimulus>, PresentationError> {
        let steps = time.steps;
        // Schedules are sized by client numbers, so their length is checked by arithmetic before
        // a single frame is allocated: `on_steps=99999999999` must cost nothing.
        let total = self.schedule_len(time);
        if total > steps {
            return Err(PresentationError::TooLong { total, steps });
        }
        let pad = |mut schedule: Vec<FrameSource>| -> Vec<FrameSource> {
            schedule.resize(steps, FrameSource::Blank);
            schedule
        };
        if mask.is_some() && !matches!(self, Presentation::Mask { .. }) {
            return Err(PresentationError::UnexpectedMask);
        }
        match self {
            Presentation::Default | Presentation::Flash { .. } => {
                let on = match self {
                    Presentation::Flash { on_steps } => *on_steps,
                    _ => time.image_on_steps,
                };
                if on == 0 {
                    return Err(PresentationError::ZeroOnSteps);
                }
                let schedule = pad(vec![FrameSource::Frame(0); on]);
                Ok(images
                    .into_iter()
                    .map(|image| Stimulus {
                        frames: vec![image],
                        schedule: schedule.clone(),
                    })
                    .collect())
            }
            Presentation::Mask {
                on_steps,
                mask_steps,
            } => {
                if *on_steps == 0 {
                    return Err(PresentationError::ZeroOnSteps);
                }
                let mask = mask.ok_or(PresentationError::MissingMask)?;
                let mut schedule = vec![FrameSource::Frame(0); *on_steps];
                schedule.extend(std::iter::repeat_n(FrameSource::Frame(1), *mask_steps));
                let schedule = pad(schedule);
                Ok(images
                    .into_iter()
                    .map(|image| Stimulus {
                        frames: vec![image, Arc::clone(&mask)],
                        schedule: schedule.clone(),
                    })
                    .collect())
            }
            Presentation::Sequence(segments) => {
                if segments.is_empty() {
                    return Err(PresentationError::EmptySequence);
                }
                let mut schedule = Vec::with_capacity(total);
                for seg in segments {
                    match *seg {
                        Segment::Image { image, steps } => {
                            if image >= images.len() {
                                return Err(PresentationError::NoSuchImage {
                                    image,
                                    count: images.len(),
                                });
                            }
                            schedule.extend(std::iter::repeat_n(FrameSource::Frame(image), steps));
                        }
                        Segment::Blank { steps } => {
                            schedule.extend(std::iter::repeat_n(FrameSource::Blank, steps))
                        }
                    }
                }
                Ok(vec![Stimulus {
                    frames: images,
                    schedule: pad(schedule),
                }])
            }
        }
    }
}

/// `0:3,blank:2,1:5` → image 0 for 3 steps, blank for 2, image 1 for 5.
pub fn parse_sequence(text: &str) -> Result<Vec<Segment>, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|part| {
            let (what, steps) = part
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("sequence segment {} is not WHAT:STEPS", quote(part)))?;
            let steps: usize = steps
                .trim()
                .parse()
                .map_err(|_| format!("sequence segment {}: steps is not a number", quote(part)))?;
            match what.trim() {
                "blank" => Ok(Segment::Blank { steps }),
                n => n
                    .parse()
                    .map(|image| Segment::Image { image, steps })
                    .map_err(|_| {
                        format!(
                            "sequence segment {}: expected an image index or `blank`",
                            quote(part)
                        )
                    }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time() -> TimeSpec {
        TimeSpec {
            steps: 6,
            step_ms: 10.0,
            image_on_steps: 4,
            blank_value: 0.5,
        }
    }

    fn frame(v: f32) -> Frame {
        Arc::new(vec![v; 2])
    }

    fn movie(s: &Stimulus) -> Vec<f32> {
        let mut out = vec![0.0; 6 * 2];
        s.write_movie(&mut out, 2, 0.5);
        out.chunks(2).map(|c| c[0]).collect()
    }

    #[test]
    fn default_shows_each_image_then_blank() {
        let s = Presentation::Default
            .stimuli(vec![frame(1.0), frame(2.0)], None, &time())
            .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(movie(&s[1]), [2.0, 2.0, 2.0, 2.0, 0.5, 0.5]);
    }

    #[test]
    fn mask_and_sequence() {
        let s = Presentation::Mask {
            on_steps: 2,
            mask_steps: 3,
        }
        .stimuli(vec![frame(1.0)], Some(frame(9.0)), &time())
        .unwrap();
        assert_eq!(movie(&s[0]), [1.0, 1.0, 9.0, 9.0, 9.0, 0.5]);
        let seq = Presentation::Sequence(parse_sequence("1:2,blank:1,0:2").unwrap());
        let s = seq
            .stimuli(vec![frame(1.0), frame(2.0)], None, &time())
            .unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(movie(&s[0]), [2.0, 2.0, 0.5, 1.0, 1.0, 0.5]);
    }

    #[test]
    fn client_sized_schedules_are_refused_before_allocation() {
        // Each of these used to build its schedule step by step (tens of GB) before the length
        // check; now the length is computed first.
        let t = time();
        let huge = [
            Presentation::Flash {
                on_steps: 99_999_999_999,
            },
            Presentation::Mask {
                on_steps: 1,
                mask_steps: usize::MAX,
            },
            Presentation::Mask {
                on_steps: usize::MAX,
                mask_steps: usize::MAX,
            },
            Presentation::Sequence(vec![
                Segment::Blank { steps: usize::MAX },
                Segment::Image {
                    image: 0,
                    steps: usize::MAX,
                },
            ]),
        ];
        for p in huge {
            let mask = matches!(p, Presentation::Mask { .. }).then(|| frame(9.0));
            assert!(matches!(
                p.stimuli(vec![frame(1.0)], mask, &t),
                Err(PresentationError::TooLong { steps: 6, .. })
            ));
        }
        assert_eq!(
            Presentation::Sequence(vec![Segment::Blank { steps: 2 }; 3]).schedule_len(&t),
            6
        );
    }

    #[test]
    fn rejects_bad_schedules() {
        let t = time();
        assert_eq!(
            Presentation::Flash { on_steps: 7 }
                .stimuli(vec![frame(1.0)], None, &t)
                .unwrap_err(),
            PresentationError::TooLong { total: 7, steps: 6 }
        );
        assert_eq!(
            Presentation::Mask {
                on_steps: 1,
                mask_steps: 1
            }
            .stimuli(vec![frame(1.0)], None, &t)
            .unwrap_err(),
            PresentationError::MissingMask
        );
        assert!(matches!(
            Presentation::Sequence(vec![Segment::Image { image: 3, steps: 1 }]).stimuli(
                vec![frame(1.0)],
                None,
                &t
            ),
            Err(PresentationError::NoSuchImage { .. })
        ));
        assert!(parse_sequence("x:1").is_err());
        let long = vec!["0:0"; 1_000_000].join(",");
        assert!(matches!(
            Presentation::from_parts(Some("sequence"), None, None, Some(&long), &t),
            Err(PresentationError::Invalid(m)) if m.contains("1000000 segments")
        ));
        assert!(Presentation::from_parts(Some("strobe"), None, None, None, &t).is_err());
    }
}
