//! The ceiling: the same model, batch sizes and thread settings as the server, called directly
//! through the crate's own ONNX Runtime backend (`OrtBackend` + `Backend::run`), no HTTP, no
//! queue, no decoding.
//!
//! ```text
//! cargo bench --bench raw_ort -- --model models/rgc_fmnist.onnx [--batches 1,2,4,8,16,32]
//!     [--seconds 4] [--min-runs 5] [--sessions 1] [--pool shared|per-session] [--intra-threads 0]
//!     [--outputs logits|all] [--prune true|false] [--hold true|false] [--image model.jpg]
//!     [--json out.json]
//!     [--device cpu|cuda:N] [--tf32 true|false]
//! ```
//! `--device cuda:N` (a build with `--features cuda` and the `onnxruntime-gpu` library) runs the
//! sessions there, with the server's CUDA settings (`--tf32` is the server's `--cuda-tf32`).
//! `--prune` is the server's `--prune-logits-graph`: with `--outputs logits` the runs use the
//! graph pruned to the logits, as the server's classification does (default true). `--hold` is
//! the server's `--hold-default-schedule`: with `--image` (a default-schedule movie) the runs use
//! the graph that computes each run of equal frames once (default true).
//! `--image` feeds a real encoded image, decoded with the model's own preprocessing and shown with
//! the default presentation (the model's `image_on_steps`, then blank), built by the server's own
//! code; without it the input is a fixed pseudo-random pattern in the normalised range.
//! `--sessions N` runs N sessions side by side, each on its own thread (the server's
//! `--sessions-per-device`), and reports their summed throughput. `--pool` is the server's
//! `--cpu-thread-pool`, and `--intra-threads 0` picks what the server picks for one model (the
//! shared pool: one thread per core; per-session: cores / sessions). Each batch size is warmed
//! up, then run until `--seconds` have passed (at least `--min-runs`). Throughput is batch / mean
//! run time. `cpu_ms_per_image` is the process's CPU time over the row (warm-up runs included)
//! per image run: what one image costs ONNX Runtime, to set beside the server's inference
//! threads (`benches/suite/load.py paired`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use convrnn_serve::backend::ort::{init_runtime, OrtBackend, RuntimeOptions, SessionOptions};
use convrnn_serve::backend::{Backend, Schedule};
use convrnn_serve::config::CpuThreadPool;
use convrnn_serve::model::inspect;
use convrnn_serve::presentation::Presentation;

/// Untimed runs of each batch size on each session before the timed ones.
const WARM_UP_RUNS: usize = 2;

struct Args {
    model: PathBuf,
    batches: Vec<usize>,
    seconds: f64,
    min_runs: usize,
    sessions: usize,
    intra_threads: usize,
    pool: String,
    outputs: String,
    prune: bool,
    hold: bool,
    image: Option<PathBuf>,
    json: Option<PathBuf>,
    device: String,
    tf32: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        model: PathBuf::from("models/rgc_fmnist.onnx"),
        batches: vec![1, 2, 4, 8, 16, 32],
        seconds: 4.0,
        min_runs: 5,
        sessions: 1,
        intra_threads: 0,
        pool: "per-session".into(),
        outputs: "logits".into(),
        prune: true,
        hold: true,
        image: None,
        json: None,
        device: "cpu".into(),
        tf32: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = val().into(),
            "--batches" => {
                a.batches = val()
                    .split(',')
                    .map(|s| s.trim().parse().expect("batch size"))
                    .collect()
            }
            "--seconds" => a.seconds = val().parse().expect("seconds"),
            "--min-runs" => a.min_runs = val().parse().expect("runs"),
            "--sessions" => a.sessions = val().parse().expect("sessions"),
            "--intra-threads" => a.intra_threads = val().parse().expect("threads"),
            "--pool" => a.pool = val(),
            "--outputs" => a.outputs = val(),
            "--prune" => a.prune = val().parse().expect("--prune true|false"),
            "--hold" => a.hold = val().parse().expect("--hold true|false"),
            "--image" => a.image = Some(val().into()),
            "--json" => a.json = Some(val().into()),
            "--device" => a.device = val(),
            "--tf32" => a.tf32 = val().parse().expect("--tf32 true|false"),
            // cargo bench passes --bench; ignore anything else libtest-like.
            _ => {}
        }
    }
    a
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let args = parse_args();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // The server's rule for one model.
    let pool = <CpuThreadPool as clap::ValueEnum>::from_str(&args.pool, false)
        .expect("--pool shared|per-session");
    // Adaptive is a choice per batch between two fixed layouts; the ceiling is measured on those.
    assert!(
        pool != CpuThreadPool::Adaptive,
        "--pool adaptive picks per batch between `--sessions 1` on all cores and \
         `--pool per-session`: measure those two"
    );
    let intra = pool.intra_threads(args.intra_threads, cores, args.sessions);
    let runtime = RuntimeOptions {
        shared_intra_threads: (pool == CpuThreadPool::Shared).then_some(intra),
    };
    let lib = init_runtime(None, runtime).expect("ONNX Runtime library");
    let info = inspect(&args.model).expect("model");
    let m = &info.metadata;
    let device = match convrnn_serve::config::parse_devices(&args.device, &[])
        .expect("--device cpu|cuda:N")
        .as_slice()
    {
        [one] => *one,
        more => panic!("--device takes one device, not {more:?}"),
    };
    let mut backends: Vec<OrtBackend> = (0..args.sessions.max(1))
        .map(|_| {
            OrtBackend::new(
                &info,
                device,
                &SessionOptions {
                    intra_threads: intra,
                    prune_for_logits: args.prune,
                    hold_default_schedule: args.hold,
                    other_schedules: true,
                    cuda: convrnn_serve::backend::ort::CudaOptions {
                        tf32: args.tf32,
                        ..Default::default()
                    },
                },
            )
            .expect("session")
        })
        .collect();
    let outputs: Vec<String> = match args.outputs.as_str() {
        "logits" => vec!["logits".to_string()],
        "all" => info.output_names().map(str::to_string).collect(),
        other => other.split(',').map(str::to_string).collect(),
    };
    let movie_len = m.time.steps * m.frame_len();
    // The movie the server builds for one still image with the default presentation.
    let movie: Option<Vec<f32>> = args.image.as_ref().map(|path| {
        let bytes = std::fs::read(path).expect("read --image");
        let spec = convrnn_serve::image::Preprocess::for_input(&info.metadata.input);
        let frame = convrnn_serve::image::preprocess(&bytes, &spec, &Default::default())
            .expect("decode --image");
        let stimuli = Presentation::Default
            .stimuli(vec![Arc::new(frame)], None, &m.time)
            .expect("default presentation");
        let mut movie = vec![0f32; movie_len];
        stimuli[0].write_movie(&mut movie, m.frame_len(), m.time.blank_value);
        movie
    });
    eprintln!(
        "model {} ({}), device {device}, T={}, {}x{}, sessions={}, pool={}, intra_threads={intra}, outputs={}, prune={}, hold={}, library {}",
        m.name,
        args.model.display(),
        m.time.steps,
        m.input.height,
        m.input.width,
        args.sessions,
        args.pool,
        args.outputs,
        args.prune,
        args.hold,
        lib.display()
    );
    println!(
        "{:>5} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "batch", "runs", "p50_ms", "p90_ms", "mean_ms", "images/s"
    );
    let schedule = if movie.is_some() {
        Schedule::Default
    } else {
        Schedule::Other
    };
    let mut rows = Vec::new();
    for &batch in &args.batches {
        let cpu_before = process_cpu_secs();
        let frames: Vec<f32> = match &movie {
            Some(movie) => movie.repeat(batch),
            // Deterministic, image-like values (normalised space, roughly [-2, 2]).
            None => (0..movie_len * batch)
                .map(|i| ((i.wrapping_mul(2654435761) >> 7) % 1000) as f32 / 250.0 - 2.0)
                .collect(),
        };
        // Every session runs the same loop on its own thread; latencies are pooled, throughput
        // is the sum over sessions.
        let per_session: Vec<Vec<f64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = backends
                .iter_mut()
                .map(|backend| {
                    let (frames, outputs) = (&frames, &outputs);
                    scope.spawn(move || {
                        for _ in 0..WARM_UP_RUNS {
                            backend
                                .run(frames, batch, schedule, outputs)
                                .expect("warm-up run");
                        }
                        let mut times = Vec::new();
                        let started = Instant::now();
                        while times.len() < args.min_runs
                            || started.elapsed().as_secs_f64() < args.seconds
                        {
                            let t = Instant::now();
                            let out = backend.run(frames, batch, schedule, outputs).expect("run");
                            times.push(t.elapsed().as_secs_f64());
                            std::hint::black_box(out);
                        }
                        times
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("session thread"))
                .collect()
        });
        let images = batch
            * per_session
                .iter()
                .map(|t| t.len() + WARM_UP_RUNS)
                .sum::<usize>();
        let cpu_ms_per_image = match (cpu_before, process_cpu_secs()) {
            (Some(a), Some(b)) => format!("{:.4}", (b - a) * 1e3 / images as f64),
            _ => "null".to_string(),
        };
        let ips: f64 = per_session
            .iter()
            .map(|t| batch as f64 * t.len() as f64 / t.iter().sum::<f64>())
            .sum();
        let mut times: Vec<f64> = per_session.into_iter().flatten().collect();
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        times.sort_by(f64::total_cmp);
        let (p50, p90) = (percentile(&times, 0.5), percentile(&times, 0.9));
        println!(
            "{batch:>5} {:>6} {:>10.3} {:>10.3} {:>10.3} {:>10.1}",
            times.len(),
            p50 * 1e3,
            p90 * 1e3,
            mean * 1e3,
            ips
        );
        rows.push(format!(
            "{{\"batch\":{batch},\"runs\":{},\"p50_ms\":{:.4},\"p90_ms\":{:.4},\"mean_ms\":{:.4},\"images_per_s\":{:.3},\"cpu_ms_per_image\":{cpu_ms_per_image}}}",
            times.len(),
            p50 * 1e3,
            p90 * 1e3,
            mean * 1e3,
            ips
        ));
    }
    if let Some(path) = args.json {
        let json = format!(
            "{{\"model\":\"{}\",\"path\":\"{}\",\"device\":\"{device}\",\"tf32\":{},\"sessions\":{},\"pool\":\"{}\",\"intra_threads\":{intra},\"cores\":{cores},\"outputs\":\"{}\",\"pruned\":{},\"input\":\"{}\",\"rows\":[{}]}}\n",
            m.name,
            args.model.display(),
            args.tf32,
            args.sessions,
            args.pool,
            args.outputs,
            args.prune && args.outputs == "logits",
            args.image
                .as_ref()
                .map_or("pattern".to_string(), |p| p.display().to_string()),
            rows.join(",")
        );
        std::fs::write(&path, json).expect("write json");
    }
}

/// User + system CPU seconds of this process so far (all threads), from /proc/self/stat; None
/// where there is no procfs.
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may contain spaces: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ, fixed at 100 in Linux's user-space ABI.
    Some(ticks / 100.0)
}
