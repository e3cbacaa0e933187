//! Decode + orient + resize + normalise of one encoded image, as the server does per request
//! (`convrnn_serve::image::preprocess`), single-threaded. Compare with
//! `benches/suite/pillow_preprocess.py`, which times Pillow + NumPy doing the same work.
//!
//! ```text
//! cargo bench --bench preprocess -- --image bench-results/images/camera.jpg --size 224
//!     [--size 28] [--seconds 3] [--json out.json]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use convrnn_serve::image::{preprocess, GrayscalePolicy, Limits, Preprocess, ResizePolicy};

fn main() {
    let mut images: Vec<PathBuf> = Vec::new();
    let mut sizes: Vec<u32> = Vec::new();
    let mut seconds = 3.0f64;
    let mut json: Option<PathBuf> = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--image" => images.push(it.next().expect("--image PATH").into()),
            "--size" => sizes.push(it.next().expect("--size N").parse().expect("size")),
            "--seconds" => seconds = it.next().expect("--seconds S").parse().expect("seconds"),
            "--json" => json = Some(it.next().expect("--json PATH").into()),
            _ => {}
        }
    }
    if images.is_empty() {
        images.push("bench-results/images/camera.jpg".into());
    }
    if sizes.is_empty() {
        sizes = vec![224, 28];
    }
    let limits = Limits::default();
    let mut rows = Vec::new();
    println!(
        "{:<40} {:>5} {:>6} {:>9} {:>9}",
        "image", "size", "runs", "p50_ms", "mean_ms"
    );
    for path in &images {
        let bytes = std::fs::read(path).expect("read image");
        for &size in &sizes {
            let p = Preprocess {
                channels: 3,
                height: size,
                width: size,
                mean: [0.485, 0.456, 0.406],
                std: [0.229, 0.224, 0.225],
                resize: ResizePolicy::ShorterSideThenCenterCrop,
                grayscale: GrayscalePolicy::Replicate,
                shorter_side: None,
            };
            for _ in 0..3 {
                preprocess(&bytes, &p, &limits).expect("preprocess");
            }
            let mut times = Vec::new();
            let started = Instant::now();
            while times.len() < 10 || started.elapsed().as_secs_f64() < seconds {
                let t = Instant::now();
                let out = preprocess(&bytes, &p, &limits).expect("preprocess");
                times.push(t.elapsed().as_secs_f64());
                std::hint::black_box(out);
            }
            let mean = times.iter().sum::<f64>() / times.len() as f64;
            times.sort_by(f64::total_cmp);
            let p50 = times[times.len() / 2];
            println!(
                "{:<40} {:>5} {:>6} {:>9.3} {:>9.3}",
                path.display(),
                size,
                times.len(),
                p50 * 1e3,
                mean * 1e3
            );
            rows.push(format!(
                "{{\"image\":\"{}\",\"size\":{size},\"runs\":{},\"p50_ms\":{:.4},\"mean_ms\":{:.4}}}",
                path.display(),
                times.len(),
                p50 * 1e3,
                mean * 1e3
            ));
        }
    }
    if let Some(path) = json {
        std::fs::write(
            path,
            format!("{{\"impl\":\"rust\",\"rows\":[{}]}}\n", rows.join(",")),
        )
        .expect("write json");
    }
}
