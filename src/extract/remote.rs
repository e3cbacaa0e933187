//! Features from a running server: one `POST /v1/models/{m}/activations` per batch (multipart,
//! `Accept: application/x-npz`), several in flight. The server pools `mean`/`max` itself (less to
//! send); everything else arrives raw and is reduced here with the same code as in-process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::plan::Plan;
use super::reduce::{reduce_row, server_pool, StepForm};
use super::runner::{Features, Loaded};
use super::ExtractError;
use crate::model::metadata::ModelMetadata;
use crate::pool::Pool;

const NPZ: &str = "application/x-npz";
/// How long a batch keeps retrying while the server sheds load (429) or restarts (503).
const RETRY_FOR: Duration = Duration::from_secs(600);
/// Deadline answers (504) a batch tolerates alone on the wire before the run stops: past that,
/// the batch itself takes longer than the server's deadline and retrying cannot help.
const TIMEOUTS_ALONE: u32 = 3;

pub struct RemoteSource {
    client: reqwest::Client,
    base: String,
    model: String,
    api_key: Option<String>,
    /// Requests allowed on the wire; a permit is forgotten each time the server's deadline
    /// passes with several in flight, so a slow server gets fewer at once instead of 504s.
    in_flight: Semaphore,
    limit: AtomicUsize,
    /// Requests sent and not yet answered (stragglers from before a shrink included).
    on_wire: AtomicUsize,
}

/// Counts a request as on the wire until dropped.
struct OnWire<'a>(&'a AtomicUsize);

impl<'a> OnWire<'a> {
    /// Enters, and says whether no other request was on the wire.
    fn enter(count: &'a AtomicUsize) -> (Self, bool) {
        let alone = count.fetch_add(1, Ordering::SeqCst) == 0;
        (Self(count), alone)
    }
}

impl Drop for OnWire<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn server_err(msg: impl Into<String>) -> ExtractError {
    ExtractError::Server(msg.into())
}

/// The answer to one request.
enum Answer {
    Ok(Vec<u8>),
    /// The server refused the input (4xx other than 408/429): per-image errors.
    Rejected(String),
}

impl RemoteSource {
    /// Connects to `base` and reads the model's description: its metadata and the weights hash
    /// if the server reports one.
    pub async fn open(
        base: &str,
        model: &str,
        api_key: Option<String>,
        concurrency: usize,
    ) -> Result<(Self, ModelMetadata, Option<String>), ExtractError> {
        if !base.starts_with("http://") {
            return Err(ExtractError::Usage(format!(
                "--server {base:?}: only http:// URLs are supported (reach a TLS endpoint through \
                 a port-forward or the in-cluster Service)"
            )));
        }
        let source = Self {
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| server_err(e.to_string()))?,
            base: base.trim_end_matches('/').to_string(),
            model: model.to_string(),
            api_key,
            in_flight: Semaphore::new(concurrency.max(1)),
            limit: AtomicUsize::new(concurrency.max(1)),
            on_wire: AtomicUsize::new(0),
        };
        let url = format!("{}/v1/models/{model}", source.base);
        let response = source
            .authorized(source.client.get(&url))
            .send()
            .await
            .map_err(|e| server_err(format!("{url}: {e}")))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| server_err(format!("{url}: {e}")))?;
        if !status.is_success() {
            return Err(server_err(format!("{url} answered {status}: {text}")));
        }
        let mut value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| server_err(format!("{url}: not JSON: {e}")))?;
        let weights = value
            .get("weights_sha256")
            .and_then(|v| v.as_str())
            .map(String::from);
        // The description is the metadata plus serving state; keep the metadata's fields.
        if let Some(obj) = value.as_object_mut() {
            obj.entry("format_version").or_insert(serde_json::json!(1));
            for serving in ["devices", "ready", "queue_depth", "weights_sha256"] {
                obj.remove(serving);
            }
        }
        let meta: ModelMetadata = serde_json::from_value(value)
            .map_err(|e| server_err(format!("{url}: not a model description: {e}")))?;
        Ok((source, meta, weights))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends `images` in one request, retrying while the server is overloaded or restarting.
    async fn post(&self, plan: &Plan, images: &[(&str, &[u8])]) -> Result<Answer, ExtractError> {
        let url = format!("{}/v1/models/{}/activations", self.base, self.model);
        let layers: Vec<&str> = plan.layers.iter().map(|l| l.name.as_str()).collect();
        let steps: Vec<String> = plan.needed_steps().iter().map(|s| s.to_string()).collect();
        let pool = match server_pool(plan.pool) {
            Pool::None => "none",
            Pool::Mean => "mean",
            Pool::Max => "max",
        };
        let query = [
            ("layers", layers.join(",")),
            ("steps", steps.join(",")),
            ("pool", pool.to_string()),
        ];
        let started = std::time::Instant::now();
        let mut wait = Duration::from_millis(200);
        let mut timeouts_alone = 0;
        loop {
            let permit = self
                .in_flight
                .acquire()
                .await
                .map_err(|e| ExtractError::Internal(e.to_string()))?;
            let mut form = reqwest::multipart::Form::new();
            for (id, bytes) in images {
                form = form.part(
                    "image",
                    reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(id.to_string()),
                );
            }
            let request = self
                .authorized(self.client.post(&url))
                .query(&query)
                .header(reqwest::header::ACCEPT, NPZ)
                .multipart(form);
            let (on_wire, alone) = OnWire::enter(&self.on_wire);
            let response = request.send().await;
            let retry_after = match response {
                Ok(r) if r.status().is_success() => {
                    return r
                        .bytes()
                        .await
                        .map(|b| Answer::Ok(b.to_vec()))
                        .map_err(|e| server_err(format!("{url}: reading the answer: {e}")));
                }
                Ok(r) => {
                    let status = r.status();
                    let after = r
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = r.text().await.unwrap_or_default();
                    let message = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                        .unwrap_or(text);
                    // 504: the server's (or a proxy's) deadline passed while this waited.
                    if status.as_u16() == 504 {
                        if self.fewer_in_flight() {
                            permit.forget();
                            continue;
                        }
                        timeouts_alone += u32::from(alone);
                        if timeouts_alone >= TIMEOUTS_ALONE {
                            return Err(server_err(format!(
                                "{url}: a batch of {} images, sent alone, outlasts the server's \
                                 request deadline ({message}); lower --batch or raise the \
                                 server's --request-timeout-ms",
                                images.len()
                            )));
                        }
                    }
                    match status.as_u16() {
                        429 | 503 | 502 | 504 => after.unwrap_or(wait),
                        401 | 403 => {
                            return Err(server_err(format!(
                                "{url} answered {status}: {message} (check --api-key / CONVRNN_API_KEY)"
                            )))
                        }
                        400 | 413 | 415 | 422 => return Ok(Answer::Rejected(message)),
                        _ => return Err(server_err(format!("{url} answered {status}: {message}"))),
                    }
                }
                Err(e) if e.is_connect() || e.is_timeout() => wait,
                Err(e) => return Err(server_err(format!("{url}: {e}"))),
            };
            drop((on_wire, permit));
            if started.elapsed() > RETRY_FOR {
                return Err(server_err(format!(
                    "{url}: still overloaded or unreachable after {} s",
                    RETRY_FOR.as_secs()
                )));
            }
            tokio::time::sleep(retry_after).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    /// One request fewer on the wire from now on (the caller forgets its permit), unless only
    /// one is left.
    fn fewer_in_flight(&self) -> bool {
        let shrunk = self
            .limit
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n > 1).then(|| n - 1)
            });
        match shrunk {
            Ok(was) => {
                eprintln!(
                    "extract: the server's request deadline passed with {was} requests in \
                     flight; sending {} at a time from now on",
                    was - 1
                );
                true
            }
            Err(_) => false,
        }
    }

    /// Features of each image of a batch; an image the server rejects is that image's error.
    pub async fn features(
        &self,
        plan: &Arc<Plan>,
        images: Vec<Loaded>,
    ) -> Result<Vec<Features>, ExtractError> {
        let sendable: Vec<(&str, &[u8])> = images
            .iter()
            .filter_map(|l| l.bytes.as_ref().ok().map(|b| (l.id.as_str(), b.as_slice())))
            .collect();
        let mut answers: Vec<Result<Vec<u8>, String>> = Vec::with_capacity(sendable.len());
        if !sendable.is_empty() {
            match self.post(plan, &sendable).await? {
                Answer::Ok(body) => answers.push(Ok(body)),
                // One bad image fails the whole request: find it by sending them one at a time.
                Answer::Rejected(_) if sendable.len() > 1 => {
                    for one in &sendable {
                        answers.push(match self.post(plan, std::slice::from_ref(one)).await? {
                            Answer::Ok(body) => Ok(body),
                            Answer::Rejected(message) => Err(message),
                        });
                    }
                }
                Answer::Rejected(message) => answers.push(Err(message)),
            }
        }
        let plan = plan.clone();
        let count = sendable.len();
        tokio::task::spawn_blocking(move || reduce_answers(&plan, images, answers, count))
            .await
            .map_err(|e| ExtractError::Internal(e.to_string()))?
    }
}

/// Splits the answers (one for the whole batch, or one per image) into per-image rows.
fn reduce_answers(
    plan: &Plan,
    images: Vec<Loaded>,
    answers: Vec<Result<Vec<u8>, String>>,
    sent: usize,
) -> Result<Vec<Features>, ExtractError> {
    let steps = plan.needed_steps();
    let position = |t: usize| steps.iter().position(|&s| s == t).unwrap_or(0);
    let form = if server_pool(plan.pool) == Pool::None {
        StepForm::Raw
    } else {
        StepForm::Pooled
    };
    // (answer index, item within it) for the i-th sent image.
    let per_image = answers.len() == sent;
    let mut parsed = Vec::with_capacity(answers.len());
    for answer in answers {
        parsed.push(match answer {
            Ok(body) => Ok(super::npz_read::read_f32_arrays(&body)
                .map_err(|e| server_err(format!("the npz answer: {e}")))?),
            Err(message) => Err(message),
        });
    }
    let mut sent_index = 0;
    let mut out = Vec::with_capacity(images.len());
    for image in images {
        let Ok(_) = image.bytes else {
            out.push(Err(image.bytes.err().unwrap_or_default()));
            continue;
        };
        let (answer, item) = if per_image {
            (sent_index, 0)
        } else {
            (0, sent_index)
        };
        sent_index += 1;
        let arrays = match &parsed[answer] {
            Ok(arrays) => arrays,
            Err(message) => {
                out.push(Err(message.clone()));
                continue;
            }
        };
        let mut rows = Vec::with_capacity(plan.layers.len());
        for layer in &plan.layers {
            let array = arrays
                .get(&layer.name)
                .ok_or_else(|| server_err(format!("the answer has no array {:?}", layer.name)))?;
            let items = array.shape.first().copied().unwrap_or(0);
            if item >= items || array.shape.get(1) != Some(&steps.len()) {
                return Err(server_err(format!(
                    "array {:?} has shape {:?}, expected [{}, {}, ...]",
                    layer.name,
                    array.shape,
                    if per_image { 1 } else { sent },
                    steps.len()
                )));
            }
            let per_item = array.data.len() / items;
            let values = &array.data[item * per_item..(item + 1) * per_item];
            let per_step = per_item / steps.len();
            let mut row = Vec::with_capacity(layer.row_values());
            reduce_row(
                layer,
                &plan.time_bins,
                plan.pool,
                form,
                |t| {
                    let p = position(t);
                    &values[p * per_step..(p + 1) * per_step]
                },
                &mut row,
            );
            rows.push(row);
        }
        out.push(Ok(rows));
    }
    Ok(out)
}
