//! In-process features: the server's engine (queues, batcher, one worker per session) on one
//! model file, fed with the server's preprocessing and default presentation.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::plan::Plan;
use super::reduce::{reduce_row, StepForm};
use super::runner::{Features, Loaded};
use super::ExtractError;
use crate::backend::ort as ort_backend;
use crate::backend::{Backend, Device};
use crate::engine::{BackendFactory, Engine, EngineConfig, Width};
use crate::image::{Limits, Preprocess};
use crate::metrics::Metrics;
use crate::model::metadata::ModelMetadata;
use crate::model::{only_logits, ModelInfo};
use crate::presentation::Presentation;

pub struct LocalSource {
    engine: Arc<Engine>,
    info: Arc<ModelInfo>,
    preprocess: Preprocess,
    /// Batches that keep every session busy.
    pub sessions: usize,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl LocalSource {
    /// Loads the runtime and the model and starts its workers (they warm up in the background).
    pub fn open(
        model: &Path,
        devices: &str,
        ort_library: Option<&Path>,
        select_layers: impl FnOnce(&ModelMetadata) -> Result<Vec<String>, ExtractError>,
        batch: usize,
        concurrency: Option<usize>,
    ) -> Result<(Self, ModelMetadata, String), ExtractError> {
        let err = |e: String| ExtractError::Model(format!("{}: {e}", model.display()));
        ort_backend::init_runtime(ort_library, ort_backend::RuntimeOptions::default())
            .map_err(|e| err(e.to_string()))?;
        let (declared, weights) =
            crate::model::read_model_file(model).map_err(|e| err(e.to_string()))?;
        let info = ModelInfo::from_declarations(model, declared, weights.clone())
            .map_err(|e| err(e.to_string()))?;
        let preprocess = Preprocess::for_input(&info.metadata.input);
        let devices =
            crate::resolve_devices(devices).map_err(|e| ExtractError::Usage(e.to_string()))?;
        // The thread layout and session settings `serve` would use with its default flags.
        let defaults = crate::config::ServeArgs::defaults();
        let plan = crate::thread_plan::ThreadPlan::new(
            &defaults,
            crate::thread_plan::available_cores(),
            &devices,
            1,
        );
        let sessions_per_device = plan.sessions_per_device;
        let sessions = sessions_per_device * devices.len();
        let in_flight = concurrency.unwrap_or(sessions).max(1);
        let options = ort_backend::SessionOptions {
            intra_threads: plan.intra_threads,
            prune_for_logits: only_logits(&select_layers(&info.metadata)?),
            // Every stimulus is shown with the default schedule.
            hold_default_schedule: true,
            other_schedules: false,
            cuda: defaults.cuda_options(),
        };
        let factory: BackendFactory =
            Arc::new(move |info: &ModelInfo, device: Device, _: Width| {
                ort_backend::OrtBackend::new(info, device, &options)
                    .map(|b| Box::new(b) as Box<dyn Backend>)
            });
        // With the defaults filled in as `/v1/models` reports them, so that both modes record
        // the same metadata.
        let mut metadata = info.metadata.clone();
        metadata.visual_degrees = Some(metadata.visual_degrees());
        let engine = Engine::start(
            vec![info],
            factory,
            EngineConfig {
                devices,
                sessions_per_device,
                max_batch: batch,
                max_delay: Duration::ZERO,
                // Every batch in flight fits, so nothing is ever refused as overload.
                queue_capacity: batch * in_flight,
                // A batch waits behind the others in flight, however slow the model.
                request_timeout: Duration::from_secs(7 * 24 * 3600),
                cpu_adaptive: false,
                // As `serve` does: a full-size model runs faster and far leaner one image at a
                // time on CPU (docs/performance.md, "Batching"); rows are still written a batch
                // at a time.
                cpu_batch_budget: defaults.cpu_batch_budget(),
            },
            Arc::new(Metrics::new()),
        )
        .map_err(|e| err(e.to_string()))?;
        let engine = Arc::new(engine);
        let info = engine
            .models()
            .next()
            .map(|m| m.info.clone())
            .ok_or_else(|| err("no model".into()))?;
        Ok((
            Self {
                engine,
                info,
                preprocess,
                sessions: in_flight,
            },
            metadata,
            weights,
        ))
    }

    /// Waits until every session is built and warm; an error if one cannot be built.
    pub async fn ready(&self) -> Result<(), ExtractError> {
        self.engine
            .started()
            .await
            .map_err(|(file, error)| ExtractError::Model(format!("{}: {error}", file.display())))
    }

    /// Features of each image of a batch (a decode failure is that image's error).
    pub async fn features(
        &self,
        plan: &Arc<Plan>,
        images: Vec<Loaded>,
    ) -> Result<Vec<Features>, ExtractError> {
        let spec = self.preprocess.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            let limits = Limits {
                max_pixels: Limits::default().max_pixels,
                max_bytes: usize::MAX,
            };
            images
                .into_iter()
                .map(|l| {
                    l.bytes.and_then(|b| {
                        crate::image::preprocess(&b, &spec, &limits)
                            .map(Arc::new)
                            .map_err(|e| e.to_string())
                    })
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| ExtractError::Internal(e.to_string()))?;
        let frames: Vec<_> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok().cloned())
            .collect();
        let meta = &self.info.metadata;
        let results = if frames.is_empty() {
            Vec::new()
        } else {
            let stimuli = Presentation::Default
                .stimuli(frames, None, &meta.time)
                .map_err(|e| ExtractError::Model(e.to_string()))?;
            let outputs = plan.layers.iter().map(|l| l.name.clone()).collect();
            self.engine
                .infer(self.info.name(), stimuli, outputs)
                .await
                .map_err(|e| ExtractError::Model(e.to_string()))?
        };
        let plan = plan.clone();
        let steps = meta.time.steps;
        tokio::task::spawn_blocking(move || {
            let mut results = results.into_iter();
            decoded
                .into_iter()
                .map(|d| {
                    d.map(|_| {
                        let r = results.next().expect("one result per decoded image");
                        plan.layers
                            .iter()
                            .map(|layer| {
                                let values = r.output(&layer.name).unwrap_or(&[]);
                                let per_step = values.len() / steps;
                                let mut row = Vec::with_capacity(layer.row_values());
                                reduce_row(
                                    layer,
                                    &plan.time_bins,
                                    plan.pool,
                                    StepForm::Raw,
                                    |t| &values[t * per_step..(t + 1) * per_step],
                                    &mut row,
                                );
                                row
                            })
                            .collect()
                    })
                })
                .collect()
        })
        .await
        .map_err(|e| ExtractError::Internal(e.to_string()))
    }

    pub fn shutdown(&self) {
        self.engine.shutdown();
    }
}
