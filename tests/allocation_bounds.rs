//! A refused request costs at most its own body plus a small bound, measured: a counting global
//! allocator records the peak of live heap bytes while the router (real engine, real ONNX
//! Runtime, the fixture model; no socket) handles generated hostile requests covering the whole
//! option grammar (query, JSON `options`, multipart `options`) and the KServe v2 JSON and binary
//! bodies, with numbers drawn from the whole u64 range.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use base64::Engine as _;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tower::ServiceExt;

/// Live heap bytes and their peak since the last [`reset_peak`], over all threads (the engine's
/// workers and the blocking pool included).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Both blocks may be live during the move; count the new one before the old goes.
            grew(new_size);
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        p
    }
}

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(live, Relaxed);
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What a refused request may allocate beyond its own body.
const SLACK: usize = 1 << 20;

/// One test at a time: the counter is global, and the test harness runs tests on parallel
/// threads (one generating cases while another measures would count both).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: common::TestRouter,
    cases: usize,
    refused: usize,
    worst: usize,
}

impl Harness {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let router = common::router(|_| {});
        Self {
            runtime,
            router,
            cases: 0,
            refused: 0,
            worst: 0,
        }
    }

    /// Sends one request; if it is refused (4xx), asserts that handling it allocated at most its
    /// body plus [`SLACK`] at the peak. Returns the status.
    fn check(&mut self, what: &str, request: Request<Body>, body_len: usize) -> StatusCode {
        let router = self.router.app.clone();
        let base = LIVE.load(Relaxed);
        PEAK.store(base, Relaxed);
        let response = self.runtime.block_on(router.oneshot(request)).unwrap();
        let peak = PEAK.load(Relaxed).saturating_sub(base);
        let status = response.status();
        self.cases += 1;
        if status.is_client_error() {
            self.refused += 1;
            self.worst = self.worst.max(peak.saturating_sub(body_len));
            assert!(
                peak <= body_len + SLACK,
                "{what}: refused with {status} after allocating {peak} bytes at the peak for a \
                 {body_len}-byte body"
            );
        }
        assert!(
            !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
            "{what}: {status}"
        );
        status
    }
}

const MODEL: &str = "tiny_convrnn";

fn post(path: &str, content_type: &str, body: Vec<u8>) -> (Request<Body>, usize) {
    let len = body.len();
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap();
    (request, len)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A TIFF whose header claims `w` x `h` 8-bit gray pixels in one strip of 16 bytes.
fn lying_tiff(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&8u32.to_le_bytes());
    let entries: [(u16, u16, u32); 8] = [
        (256, 4, w),   // ImageWidth
        (257, 4, h),   // ImageLength
        (258, 3, 8),   // BitsPerSample
        (259, 3, 1),   // Compression: none
        (262, 3, 1),   // Photometric: black is zero
        (273, 4, 200), // StripOffsets
        (278, 4, h),   // RowsPerStrip
        (279, 4, 16),  // StripByteCounts
    ];
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, kind, value) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        if kind == 3 {
            out.extend_from_slice(&(value as u16).to_le_bytes());
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.resize(216, 0x55);
    out
}

/// A lossless WebP whose VP8L header claims `w` x `h` (at most 16384 a side) with no pixels.
fn lying_webp(w: u32, h: u32) -> Vec<u8> {
    let bits = (w - 1) | ((h - 1) << 14);
    let mut vp8l = vec![0x2f];
    vp8l.extend_from_slice(&bits.to_le_bytes());
    vp8l.extend_from_slice(&[0; 8]);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&((4 + 8 + vp8l.len()) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBPVP8L");
    out.extend_from_slice(&(vp8l.len() as u32).to_le_bytes());
    out.extend_from_slice(&vp8l);
    out
}

/// A WebP with an extended header (VP8X) claiming a `w` x `h` canvas (up to 2^24 a side).
fn lying_webp_extended(w: u32, h: u32) -> Vec<u8> {
    let mut vp8x = vec![0u8; 10];
    vp8x[4..7].copy_from_slice(&(w - 1).to_le_bytes()[..3]);
    vp8x[7..10].copy_from_slice(&(h - 1).to_le_bytes()[..3]);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&((4 + 8 + vp8x.len()) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBPVP8X");
    out.extend_from_slice(&(vp8x.len() as u32).to_le_bytes());
    out.extend_from_slice(&vp8x);
    out
}

fn lying_images() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "png 100000x100000",
            common::huge_png_header(100_000, 100_000),
        ),
        ("png 65536x1", common::huge_png_header(65_536, 1)),
        (
            "png 1x4000000000",
            common::huge_png_header(1, 4_000_000_000),
        ),
        ("tiff 100000x100000", lying_tiff(100_000, 100_000)),
        ("tiff 1x4000000000", lying_tiff(1, 4_000_000_000)),
        ("tiff 7000x7000", lying_tiff(7000, 7000)),
        ("webp 16384x16384", lying_webp(16_384, 16_384)),
        (
            "webp vp8x 100000x100000",
            lying_webp_extended(100_000, 100_000),
        ),
    ]
}

// ----- the option grammar -----

/// Numbers as clients write them, from the whole u64 range and past it.
fn number() -> BoxedStrategy<String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        (0u64..12).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| x.to_string()),
        Just("NaN".to_string()),
        Just("inf".to_string()),
        Just("-0".to_string()),
        Just("1e309".to_string()),
        Just("18446744073709551616".to_string()),
        "[0-9]{20,60}",
        "[ -~]{0,12}",
    ]
    .boxed()
}

/// `item` repeated up to `max` times, joined by commas: lists, long and short.
fn list(item: BoxedStrategy<String>, max: usize) -> BoxedStrategy<String> {
    (prop::collection::vec(item.clone(), 1..4), 0..max)
        .prop_map(|(items, repeat)| {
            let mut out: Vec<String> = items;
            let first = out[0].clone();
            out.extend(std::iter::repeat_n(first, repeat));
            out.join(",")
        })
        .boxed()
}

fn option_pair() -> BoxedStrategy<(String, String)> {
    let steps = prop_oneof![
        number(),
        (number(), number()).prop_map(|(a, b)| format!("{a}:{b}")),
        number().prop_map(|a| format!("{a}:")),
        number().prop_map(|b| format!(":{b}")),
        list(number(), 50_000),
        Just("all".to_string()),
    ];
    let window = prop_oneof![
        (number(), number()).prop_map(|(a, b)| format!("{a}:{b}")),
        number(),
    ];
    let layer = prop_oneof![
        Just("all".to_string()),
        Just("conv1".to_string()),
        Just("conv3".to_string()),
        Just("logits".to_string()),
        "[a-z0-9]{1,8}",
    ]
    .boxed();
    let segment = prop_oneof![
        (number(), number()).prop_map(|(i, n)| format!("{i}:{n}")),
        number().prop_map(|n| format!("blank:{n}")),
    ]
    .boxed();
    prop_oneof![
        steps.prop_map(|v| ("steps".to_string(), v)),
        window.prop_map(|v| ("window_ms".to_string(), v)),
        list(layer, 100_000).prop_map(|v| ("layers".to_string(), v)),
        (0usize..300_000).prop_map(|n| ("layers".to_string(), "x".repeat(n))),
        prop_oneof![Just("none"), Just("mean"), Just("max"), Just("sum")]
            .prop_map(|v| ("pool".to_string(), v.to_string())),
        prop_oneof![
            Just("default"),
            Just("flash"),
            Just("mask"),
            Just("sequence"),
            Just("strobe")
        ]
        .prop_map(|v| ("presentation".to_string(), v.to_string())),
        number().prop_map(|v| ("on_steps".to_string(), v)),
        number().prop_map(|v| ("mask_steps".to_string(), v)),
        number().prop_map(|v| ("top_k".to_string(), v)),
        list(segment, 100_000).prop_map(|v| ("sequence".to_string(), v)),
        prop_oneof![Just("true"), Just("false"), Just("2")]
            .prop_map(|v| ("per_timestep".to_string(), v.to_string())),
        ("[a-z_]{1,12}", "[ -~]{0,20}"),
    ]
    .boxed()
}

/// A JSON value for an option as a client might write it: a string, a number, or a list.
fn json_value(v: &str) -> serde_json::Value {
    if let Ok(n) = v.parse::<u64>() {
        return n.into();
    }
    if let Ok(n) = v.parse::<i64>() {
        return n.into();
    }
    if v.contains(',') {
        return v.split(',').map(json_value).collect();
    }
    v.into()
}

#[derive(Debug, Clone)]
enum Carrier {
    Query,
    Json,
    Multipart,
}

fn v1_request(
    pairs: &[(String, String)],
    carrier: &Carrier,
    activations: bool,
    npz: bool,
    image: &[u8],
    copies: usize,
) -> (Request<Body>, usize) {
    let route = if activations {
        "activations"
    } else {
        "classify"
    };
    let mut path = format!("/v1/models/{MODEL}/{route}");
    let (content_type, body) = match carrier {
        Carrier::Query => {
            let mut q = serde_urlencoded::to_string(pairs).unwrap();
            // A URI is at most 64 KiB (the server's head limit refuses longer ones with 431).
            q.truncate(60_000);
            path = format!("{path}?{q}");
            ("image/png".to_string(), image.to_vec())
        }
        Carrier::Json => {
            let options: serde_json::Map<String, serde_json::Value> = pairs
                .iter()
                .map(|(k, v)| (k.clone(), json_value(v)))
                .collect();
            let body = serde_json::json!({
                "images": vec![b64(image); copies],
                "options": options,
            });
            (
                "application/json".to_string(),
                serde_json::to_vec(&body).unwrap(),
            )
        }
        Carrier::Multipart => {
            let options: serde_json::Map<String, serde_json::Value> = pairs
                .iter()
                .map(|(k, v)| (k.clone(), json_value(v)))
                .collect();
            let mut body = Vec::new();
            for i in 0..copies {
                body.extend_from_slice(
                    format!(
                        "--XB\r\nContent-Disposition: form-data; name=\"image{i}\"; \
                         filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n"
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(image);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(
                b"--XB\r\nContent-Disposition: form-data; name=\"options\"\r\n\
                  Content-Type: application/json\r\n\r\n",
            );
            body.extend_from_slice(&serde_json::to_vec(&options).unwrap());
            body.extend_from_slice(b"\r\n--XB--\r\n");
            ("multipart/form-data; boundary=XB".to_string(), body)
        }
    };
    let (mut request, len) = post(&path, &content_type, body);
    if npz {
        request.headers_mut().insert(
            header::ACCEPT,
            header::HeaderValue::from_static("application/x-npz"),
        );
    }
    (request, len)
}

fn dim() -> BoxedStrategy<i64> {
    prop_oneof![
        any::<i64>(),
        (0i64..10),
        Just(i64::MAX),
        Just(-1),
        (0i64..=u32::MAX as i64),
    ]
    .boxed()
}

/// A KServe v2 request: JSON data, or a binary tail with `binary_data_size` from the whole u64
/// range, and sometimes a lying `Inference-Header-Content-Length`.
#[allow(clippy::type_complexity)]
fn v2_request() -> BoxedStrategy<(Request<Body>, usize, String)> {
    let name = prop_oneof![
        Just("frames".to_string()),
        Just("images".to_string()),
        "[a-z]{0,6}",
    ];
    let datatype = prop_oneof![
        Just("FP32".to_string()),
        Just("BYTES".to_string()),
        Just("INT8".to_string())
    ];
    let shape = prop::collection::vec(dim(), 0..8);
    let data = prop_oneof![
        // Numbers, flat or nested.
        (0usize..200_000, 1usize..4).prop_map(|(n, depth)| {
            let mut v = serde_json::Value::from(vec![0.5f32; n]);
            for _ in 1..depth {
                v = serde_json::Value::from(vec![v]);
            }
            Some(v)
        }),
        (0usize..20_000).prop_map(|n| Some(serde_json::Value::from(vec!["AAAA"; n]))),
        Just(None),
    ];
    let binary = prop_oneof![
        any::<u64>().prop_map(Some),
        (0u64..300_000).prop_map(Some),
        Just(None)
    ];
    let tail = 0usize..300_000;
    let header_len = prop_oneof![
        Just(None),
        any::<u64>().prop_map(|n| Some(n.to_string())),
        Just(Some("-1".to_string()))
    ];
    let params = prop_oneof![
        Just(serde_json::Value::Null),
        (0usize..50_000).prop_map(|n| {
            let m: serde_json::Map<String, serde_json::Value> =
                (0..n).map(|i| (format!("k{i}"), 0.into())).collect();
            m.into()
        }),
        any::<bool>().prop_map(|b| serde_json::json!({"binary_data_output": b})),
    ];
    let outputs = prop_oneof![
        Just(None),
        (
            0usize..20_000,
            prop_oneof![Just("logits"), Just("conv1"), Just("nope")]
        )
            .prop_map(|(n, o)| Some(vec![serde_json::json!({"name": o}); n])),
    ];
    (
        (name, datatype, shape, data, binary),
        (tail, header_len, params, outputs, 1usize..20),
    )
        .prop_map(
            |((name, datatype, shape, data, binary), (tail, header_len, params, outputs, ninputs))| {
                let mut input = serde_json::json!({"name": name, "datatype": datatype, "shape": shape});
                if let Some(d) = data {
                    input["data"] = d;
                }
                if let Some(size) = binary {
                    input["parameters"] = serde_json::json!({"binary_data_size": size});
                }
                let inputs = vec![input; if ninputs > 17 { ninputs } else { 1 }];
                let mut req = serde_json::json!({"inputs": inputs, "parameters": params});
                if let Some(o) = outputs {
                    req["outputs"] = o.into();
                }
                let mut body = serde_json::to_vec(&req).unwrap();
                let json_len = body.len();
                body.resize(json_len + tail, 7);
                let mut builder = Request::post(format!("/v2/models/{MODEL}/infer"));
                let header = match header_len {
                    Some(h) => Some(h),
                    None if tail > 0 => Some(json_len.to_string()),
                    None => None,
                };
                if let Some(h) = &header {
                    builder = builder.header("inference-header-content-length", h);
                }
                let len = body.len();
                let what = format!(
                    "v2 {name:?} {datatype} shape {shape:?} binary {binary:?} tail {tail} header {header:?}"
                );
                (builder.body(Body::from(body)).unwrap(), len, what)
            },
        )
        .boxed()
}

/// Generated cases per grammar: enough to cover every branch, few enough that the whole file
/// runs in seconds in a debug build.
const CASES: u32 = 64;

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    })
}

#[test]
fn refused_requests_allocate_at_most_their_body_plus_one_mib() {
    let _serial = serial();
    let mut h = Harness::new();
    let png = common::png(20, 20, 1);
    let h = std::cell::RefCell::new(&mut h);

    // The option grammar, through each of its three carriers.
    let v1 = (
        prop::collection::vec(option_pair(), 0..5),
        prop_oneof![
            Just(Carrier::Query),
            Just(Carrier::Json),
            Just(Carrier::Multipart)
        ],
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(1usize), 0usize..3, 60usize..70],
    );
    runner()
        .run(&v1, |(pairs, carrier, activations, npz, copies)| {
            let (request, len) = v1_request(&pairs, &carrier, activations, npz, &png, copies);
            let what = format!("{carrier:?} activations={activations} npz={npz} x{copies}");
            h.borrow_mut().check(&what, request, len);
            Ok(())
        })
        .unwrap();

    runner()
        .run(&v2_request(), |(request, len, what)| {
            h.borrow_mut().check(&what, request, len);
            Ok::<(), TestCaseError>(())
        })
        .unwrap();

    let h = h.into_inner();
    eprintln!(
        "allocation bounds: {} generated requests, {} refused, worst peak {} bytes beyond the body",
        h.cases, h.refused, h.worst
    );
    assert!(
        h.refused > h.cases / 2,
        "most generated requests are refused"
    );
}

/// The hostile requests the issue names, each of which must be refused cheaply.
#[test]
fn named_hostile_requests_are_refused_cheaply() {
    let _serial = serial();
    let mut h = Harness::new();
    let png = common::png(20, 20, 1);
    let act = format!("/v1/models/{MODEL}/activations");
    let repeated = |item: &str, n: usize| vec![item; n].join(",");
    let queries = [
        format!("steps=0:{}", u64::MAX),
        format!("steps={}", repeated("1", 30_000)),
        format!("steps={}", u64::MAX),
        "window_ms=NaN:1".to_string(),
        "window_ms=1e309:1e310".to_string(),
        format!("window_ms={}:1e308", u64::MAX),
        format!("layers={}", repeated("nope", 12_000)),
        format!("layers={}", "x".repeat(60_000)),
        format!("presentation=flash&on_steps={}", u64::MAX),
        format!("presentation=mask&mask_steps={}", u64::MAX),
        format!("presentation=sequence&sequence={}", repeated("0:1", 15_000)),
        repeated("a=1", 15_000).replace(',', "&"),
    ];
    // Legitimate, however long: repeats of `all` collapse to the model's layers.
    let (request, len) = post(
        &format!("{act}?layers={}", repeated("all", 15_000)),
        "image/png",
        png.clone(),
    );
    assert_eq!(h.check("layers=all,all,...", request, len), StatusCode::OK);
    for q in &queries {
        let (request, len) = post(&format!("{act}?{q}"), "image/png", png.clone());
        let status = h.check(&q[..q.len().min(60)], request, len);
        assert!(status.is_client_error(), "{q:.60}: {status}");
    }
    let classify = format!("/v1/models/{MODEL}/classify");
    let (request, len) = post(
        &format!("{classify}?top_k={}", u64::MAX),
        "image/png",
        png.clone(),
    );
    assert_eq!(h.check("top_k=u64::MAX", request, len), StatusCode::OK);

    // JSON bodies: many images, huge option lists, nested arrays, base64 that is not.
    let big_steps: Vec<u64> = vec![1; 400_000];
    let bodies = [
        serde_json::json!({"images": vec![""; 400_000]}),
        serde_json::json!({"images": [b64(&png)], "options": {"steps": big_steps}}),
        serde_json::json!({"images": [b64(&png)], "options": {"layers": vec!["conv1"; 200_000]}}),
        serde_json::json!({"images": [b64(&png)], "options": {"steps": [[[[1]]]]}}),
        serde_json::json!({"images": ["%".repeat(2_000_000)]}),
        serde_json::json!({"images": [b64(&png)], "mask": "A".repeat(3_000_001)}),
        serde_json::json!({"images": [b64(&png)], "options": vec![0; 400_000]}),
    ];
    for body in &bodies {
        let bytes = serde_json::to_vec(body).unwrap();
        let (request, len) = post(&act, "application/json", bytes);
        let status = h.check("json body", request, len);
        assert!(status.is_client_error(), "{status}");
    }

    // Multipart: a hundred thousand empty parts, and an options part that is a huge array.
    let mut many = Vec::new();
    for _ in 0..100_000 {
        many.extend_from_slice(b"--XB\r\nContent-Disposition: form-data; name=\"i\"\r\n\r\n\r\n");
    }
    many.extend_from_slice(b"--XB--\r\n");
    let mut big_options =
        b"--XB\r\nContent-Disposition: form-data; name=\"options\"\r\n\r\n".to_vec();
    big_options.extend_from_slice(&serde_json::to_vec(&vec![vec![0u8; 0]; 300_000]).unwrap());
    big_options.extend_from_slice(b"\r\n--XB--\r\n");
    for body in [many, big_options] {
        let (request, len) = post(&act, "multipart/form-data; boundary=XB", body);
        let status = h.check("multipart", request, len);
        assert!(status.is_client_error(), "{status}");
    }

    // Images whose headers lie about their size: 413 or 400 from the header, whatever the format.
    for (what, bytes) in lying_images() {
        let (request, len) = post(&act, "application/octet-stream", bytes);
        let status = h.check(what, request, len);
        assert!(matches!(status.as_u16(), 400 | 413), "{what}: {status}");
    }

    // KServe v2: shapes that overflow or are negative, sizes from the end of the u64 range.
    let infer = format!("/v2/models/{MODEL}/infer");
    let v2_bodies = [
        serde_json::json!({"inputs": [{"name": "frames", "datatype": "FP32", "shape": [i64::MAX, i64::MAX, 1, 1, 1], "data": [0]}]}),
        serde_json::json!({"inputs": [{"name": "frames", "datatype": "FP32", "shape": [-1, 4, 3, 16, 16], "data": [0]}]}),
        serde_json::json!({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [u32::MAX], "data": ["AAAA"]}]}),
        serde_json::json!({"inputs": [{"name": "frames", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": u64::MAX}}]}),
        serde_json::json!({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": vec![0.5; 300_000]}]}),
        serde_json::json!({"inputs": vec![serde_json::json!({"name": "x", "shape": [1], "datatype": "FP32"}); 50_000]}),
        serde_json::json!({"inputs": [], "outputs": vec![serde_json::json!({"name": "logits"}); 50_000]}),
        serde_json::json!({"inputs": [], "parameters": (0..50_000).map(|i| (format!("k{i}"), serde_json::Value::from(vec![0; 2]))).collect::<serde_json::Map<_, _>>()}),
    ];
    for body in &v2_bodies {
        let bytes = serde_json::to_vec(body).unwrap();
        let (request, len) = post(&infer, "application/json", bytes);
        let status = h.check("v2", request, len);
        assert!(status.is_client_error(), "{status}");
    }
    // BYTES in binary: element lengths that claim more than the body has.
    let header = serde_json::to_vec(&serde_json::json!({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 8}}]})).unwrap();
    let mut body = header.clone();
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    body.extend_from_slice(&[0; 4]);
    let len = body.len();
    let request = Request::post(&infer)
        .header("inference-header-content-length", header.len().to_string())
        .body(Body::from(body))
        .unwrap();
    assert!(h.check("v2 binary BYTES", request, len).is_client_error());
}
