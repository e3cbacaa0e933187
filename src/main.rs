//! The `convrnn-serve` binary: parse the command line, set up logging, and hand over to the
//! library.

use clap::Parser;
use convrnn_serve::config::{Cli, Command};
use convrnn_serve::thread_plan::ThreadPlan;

// Under a connection storm glibc's malloc kept growing the heap slowly, while mimalloc stays
// flat and returns freed pages on its own (docs/performance.md, "Allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_tracing(json: bool) {
    init_tracing_with(json, "info,ort=warn");
}

fn init_tracing_with(json: bool, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A dependency-free HTTP GET for container health checks (the runtime image has no curl).
fn healthcheck(url: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("only http:// URLs"))?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        anyhow::bail!("{url} answered {status}")
    }
}

/// A start-up failure is one line on stderr (`convrnn-serve: error: ...`, causes joined by `: `)
/// and exit status 1: what a container log or `kubectl describe` shows.
fn main() {
    if let Err(e) = run() {
        eprintln!("convrnn-serve: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_tracing(args.log_format == "json");
            let cores = convrnn_serve::thread_plan::available_cores();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(ThreadPlan::http_threads(&args, cores))
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                use anyhow::Context;
                let api = tokio::net::TcpListener::bind(args.listen)
                    .await
                    .with_context(|| format!("--listen {}", args.listen))?;
                let admin = match args.admin_listen {
                    Some(addr) => Some(
                        tokio::net::TcpListener::bind(addr)
                            .await
                            .with_context(|| format!("--admin-listen {addr}"))?,
                    ),
                    None => None,
                };
                eprintln!("convrnn-serve listening on http://{}", api.local_addr()?);
                if let Some(admin) = &admin {
                    eprintln!(
                        "convrnn-serve: health and metrics on http://{}",
                        admin.local_addr()?
                    );
                }
                let listeners = convrnn_serve::Listeners { api, admin };
                convrnn_serve::run(listeners, *args, convrnn_serve::shutdown::signal()).await
            })
        }
        Command::Inspect { file, ort_library } => {
            init_tracing(false);
            print!(
                "{}",
                convrnn_serve::inspect::inspect_report(&file, ort_library.as_deref())?
            );
            Ok(())
        }
        Command::Extract(args) => {
            // The engine's start-up logs would scroll the progress bar away.
            init_tracing_with(false, "warn");
            let out = args.out.clone();
            let s = convrnn_serve::extract::run(*args)?;
            let m = &s.manifest;
            println!(
                "wrote {} rows in {:.1} s ({:.2} images/s; {:.2} images/s after {:.1} s of start-up), {} failed; {}: {}",
                s.written_rows,
                s.seconds,
                s.written_rows as f64 / s.seconds.max(1e-9),
                s.written_rows as f64 / (s.seconds - s.startup_seconds).max(1e-9),
                s.startup_seconds,
                m.failures.len(),
                out.join(convrnn_serve::extract::manifest::FILE).display(),
                if m.complete {
                    "complete".to_string()
                } else {
                    format!(
                        "{} of {} rows so far (other shards)",
                        m.rows_done,
                        m.plan.rows()
                    )
                }
            );
            Ok(())
        }
        Command::Healthcheck { url } => {
            let url = url.unwrap_or_else(|| {
                // Probes are answered on the admin listener when there is one.
                let port = std::env::var("CONVRNN_ADMIN_LISTEN")
                    .or_else(|_| std::env::var("CONVRNN_LISTEN"))
                    .ok()
                    .and_then(|l| l.parse::<std::net::SocketAddr>().ok())
                    .map_or(8080, |a| a.port());
                format!("http://127.0.0.1:{port}/health/ready")
            });
            healthcheck(&url)
        }
    }
}
