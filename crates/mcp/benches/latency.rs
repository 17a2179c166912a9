//! The gateway's added latency on an allowed call, stdio on both sides:
//! rmcp's client calls the read-only tool `read_text_file` of
//! `@modelcontextprotocol/server-filesystem` (a) directly and (b) through
//! `toolgate mcp`, one call at a time, and compares the two.
//!
//! Run with `cargo bench -p toolgate-mcp --bench latency` after
//! `cargo build --release --workspace` (the bench starts the built
//! `toolgate` binary) and `npm ci --prefix crates/mcp/tests/servers` (the
//! filesystem server).
//!
//! Settings, from the environment:
//!
//! - `TOOLGATE_BIN`: the `toolgate` binary (default
//!   `$CARGO_TARGET_DIR/release/toolgate`, else `target/release/toolgate`
//!   in the workspace).
//! - `BENCH_CALLS`: calls measured on each side (default 2000), after 100
//!   warm-up calls on each side that are not counted. The two sides take
//!   turns in batches of 100, so that noise on the machine hits both alike.
//! - `BENCH_PAUSE_US`: a pause after each call, on both sides, not
//!   counted (default 0: back to back). An agent thinks between calls; with
//!   a pause of a few milliseconds the gateway's work after the reply
//!   (recording the outcome) is done before the next call comes.
//! - `TOOLGATE_BENCH_DIR`: where the temporary folder with the SQLite store
//!   and the served file goes (default the system's temporary folder): put
//!   it on the disk you want to measure.
//! - `TOOLGATE_BENCH_POSTGRES`: a PostgreSQL URL (an existing, preferably
//!   empty, database); when set, a second configuration runs with the
//!   gateway's store there.
//!
//! The gateway runs with no `toolgate.toml` (its working directory is the
//! temporary folder), so the read-only tool is allowed by its
//! `readOnlyHint`: one durable commit before the call is forwarded, the
//! outcome written after the reply.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, Implementation};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

const WARMUP: usize = 100;
const BATCH: usize = 100;
const CONTENT: &str = "hello from the files\n";

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn toolgate_bin() -> PathBuf {
    let root = workspace_root();
    let (bin, origin) = if let Some(bin) = std::env::var_os("TOOLGATE_BIN") {
        (PathBuf::from(bin), "TOOLGATE_BIN")
    } else if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        (
            root.join(target).join("release/toolgate"),
            "$CARGO_TARGET_DIR/release/toolgate",
        )
    } else {
        (
            root.join("target/release/toolgate"),
            "target/release/toolgate",
        )
    };
    if !bin.is_file() {
        fail(&format!(
            "no toolgate binary at {} ({origin}): run `cargo build --release --workspace` \
             first (with the same CARGO_TARGET_DIR), or set TOOLGATE_BIN",
            bin.display()
        ));
    }
    bin
}

/// The filesystem server's entry, from its package.json `bin`.
fn filesystem_server() -> (PathBuf, String) {
    let package = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/servers/node_modules/@modelcontextprotocol/server-filesystem");
    let manifest = package.join("package.json");
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|error| {
        fail(&format!(
            "the MCP test servers are not installed ({}: {error}): run \
             `npm ci --prefix crates/mcp/tests/servers`",
            manifest.display()
        ))
    });
    let manifest: Value = serde_json::from_str(&text)
        .unwrap_or_else(|error| fail(&format!("{}: {error}", package.display())));
    let entry = match &manifest["bin"] {
        Value::String(entry) => entry.clone(),
        Value::Object(bins) => match bins.values().next() {
            Some(Value::String(entry)) => entry.clone(),
            _ => fail("server-filesystem's package.json has an empty `bin`"),
        },
        _ => fail("server-filesystem's package.json has no `bin`"),
    };
    let version = manifest["version"].as_str().unwrap_or("?").to_owned();
    (package.join(entry), version)
}

fn fail(message: &str) -> ! {
    eprintln!("latency bench: {message}");
    std::process::exit(2)
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".to_owned())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

type Client = RunningService<RoleClient, ()>;

/// The client, and the child's process id.
async fn connect(mut command: tokio::process::Command, what: &str) -> (Client, u32) {
    command.kill_on_drop(true);
    let (transport, _stderr) = TokioChildProcess::builder(command)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|error| fail(&format!("cannot start {what}: {error}")));
    let pid = transport.id().unwrap_or(0);
    let client = ()
        .serve(transport)
        .await
        .unwrap_or_else(|error| fail(&format!("{what} did not initialize: {error}")));
    (client, pid)
}

/// The CPU time (user, system; all threads) a process has used so far,
/// from /proc (in clock ticks, usually 10 ms: good over many calls).
fn cpu_time(pid: u32) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses: utime
    // and stime are fields 14 and 15 of the line, 12 and 13 after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user = fields.get(11)?.parse::<u64>().ok()?;
    let system = fields.get(12)?.parse::<u64>().ok()?;
    let per_second = command_output("getconf", &["CLK_TCK"])
        .parse::<u64>()
        .unwrap_or(100) as f64;
    Some((
        Duration::from_secs_f64(user as f64 / per_second),
        Duration::from_secs_f64(system as f64 / per_second),
    ))
}

/// The first process whose parent is `pid` (the gateway's server).
fn child_of(pid: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let ppid: u32 = stat[stat.rfind(')')? + 2..]
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        })
}

/// The CPU time of each of `pids` since `before`, in µs per call, as
/// "user+system".
fn cpu_per_call(
    pids: &[u32],
    before: &[Option<(Duration, Duration)>],
    calls: usize,
) -> Vec<String> {
    let per_call = |d: Duration| d.as_secs_f64() * 1e6 / calls as f64;
    pids.iter()
        .zip(before)
        .map(|(pid, before)| match (cpu_time(*pid), before) {
            (Some((user, system)), Some((user0, system0))) => format!(
                "{:.0}+{:.0}",
                per_call(user - *user0),
                per_call(system - *system0)
            ),
            _ => "?".to_owned(),
        })
        .collect()
}

/// One call, timed; then the pause, if any (not timed).
async fn call_once(
    client: &Client,
    params: &CallToolRequestParams,
    what: &str,
    pause: Duration,
) -> Duration {
    let start = Instant::now();
    let result = client.call_tool(params.clone()).await;
    let elapsed = start.elapsed();
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
    match result {
        Ok(result) => {
            let text = result.content.first().and_then(|block| block.as_text());
            if result.is_error == Some(true) || text.map(|text| text.text.as_str()) != Some(CONTENT)
            {
                fail(&format!("{what}: unexpected result {result:?}"));
            }
        }
        Err(error) => fail(&format!("{what}: the call failed: {error}")),
    }
    elapsed
}

struct Stats {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

/// Nearest-rank percentiles, in microseconds.
fn stats(samples: &mut [Duration]) -> Stats {
    samples.sort_unstable();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |p: f64| {
        let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        micros(samples[rank - 1])
    };
    Stats {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: micros(*samples.last().unwrap()),
        mean: samples.iter().map(|d| micros(*d)).sum::<f64>() / samples.len() as f64,
    }
}

struct Setup<'a> {
    bin: &'a Path,
    entry: &'a Path,
    dir: &'a Path,
    files: &'a Path,
    calls: usize,
    pause: Duration,
}

async fn measure(setup: &Setup<'_>, label: &str, db: &str) {
    let node = |command: &mut tokio::process::Command| {
        command.arg("node").arg(setup.entry).arg(setup.files);
    };
    let mut direct_command = tokio::process::Command::new("node");
    direct_command
        .arg(setup.entry)
        .arg(setup.files)
        .current_dir(setup.dir);
    let (direct, direct_pid) = connect(direct_command, "the filesystem server").await;

    let mut gated_command = tokio::process::Command::new(setup.bin);
    gated_command
        .current_dir(setup.dir) // no toolgate.toml there
        .env_remove("TOOLGATE_CONFIG")
        .env_remove("TOOLGATE_DATABASE_URL")
        .args([
            "--db",
            db,
            "mcp",
            "--name",
            "files",
            "--approve-via",
            "inbox",
            "--",
        ]);
    node(&mut gated_command);
    let (gated, gated_pid) = connect(gated_command, "toolgate mcp").await;
    let gated_server_pid = child_of(gated_pid).unwrap_or(0);

    let params: CallToolRequestParams = serde_json::from_value(json!({
        "name": "read_text_file",
        "arguments": {"path": setup.files.join("hello.txt")},
    }))
    .unwrap();

    for _ in 0..WARMUP {
        call_once(&direct, &params, "direct", setup.pause).await;
    }
    for _ in 0..WARMUP {
        call_once(&gated, &params, "via toolgate", setup.pause).await;
    }

    let mut direct_samples = Vec::with_capacity(setup.calls);
    let mut gated_samples = Vec::with_capacity(setup.calls);
    let pids = [direct_pid, gated_pid, gated_server_pid];
    let cpu_before: Vec<_> = pids.iter().map(|pid| cpu_time(*pid)).collect();
    let wall = Instant::now();
    while direct_samples.len() < setup.calls {
        let batch = BATCH.min(setup.calls - direct_samples.len());
        for _ in 0..batch {
            direct_samples.push(call_once(&direct, &params, "direct", setup.pause).await);
        }
        for _ in 0..batch {
            gated_samples.push(call_once(&gated, &params, "via toolgate", setup.pause).await);
        }
    }
    let wall = wall.elapsed();
    let cpu = cpu_per_call(&pids, &cpu_before, setup.calls);

    let _ = direct.cancel().await;
    let _ = gated.cancel().await;

    let d = stats(&mut direct_samples);
    let g = stats(&mut gated_samples);
    println!();
    println!(
        "store: {label} — {} calls each side, batches of {BATCH}, {} warm-up calls each (not counted), pause {} µs after each, {:.1} s",
        setup.calls,
        WARMUP,
        setup.pause.as_micros(),
        wall.as_secs_f64()
    );
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "µs", "p50", "p90", "p99", "max", "mean"
    );
    for (name, s) in [("direct", &d), ("via toolgate", &g)] {
        println!(
            "{name:<14} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
            s.p50, s.p90, s.p99, s.max, s.mean
        );
    }
    // The difference of the maxima says nothing; it is left out.
    println!(
        "{:<14} {:>9.0} {:>9.0} {:>9.0} {:>9} {:>9.0}",
        "added",
        g.p50 - d.p50,
        g.p90 - d.p90,
        g.p99 - d.p99,
        "-",
        g.mean - d.mean
    );
    println!(
        "CPU per call (µs, user+system): server direct {}; via toolgate: gateway {}, its server {}",
        cpu[0], cpu[1], cpu[2]
    );
    let verdict = |value: f64, goal: f64| if value < goal { "met" } else { "NOT met" };
    println!(
        "added p50 {:.0} µs (goal < 1000 µs: {}), added p99 {:.0} µs (goal < 5000 µs: {})",
        g.p50 - d.p50,
        verdict(g.p50 - d.p50, 1000.0),
        g.p99 - d.p99,
        verdict(g.p99 - d.p99, 5000.0)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to choose.
    let calls = match std::env::var("BENCH_CALLS") {
        Ok(text) => text
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| fail(&format!("BENCH_CALLS={text:?} is not a positive number"))),
        Err(_) => 2000,
    };
    let pause =
        match std::env::var("BENCH_PAUSE_US") {
            Ok(text) => Duration::from_micros(text.parse::<u64>().unwrap_or_else(|_| {
                fail(&format!("BENCH_PAUSE_US={text:?} is not a number of µs"))
            })),
            Err(_) => Duration::ZERO,
        };
    let bin = toolgate_bin();
    let (entry, server_version) = filesystem_server();
    let dir = match std::env::var_os("TOOLGATE_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .unwrap_or_else(|error| fail(&format!("cannot make a temporary folder: {error}")));
    // The filesystem server resolves symlinks; give it the real path.
    let dir_path = dir.path().canonicalize().unwrap();
    let files = dir_path.join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("hello.txt"), CONTENT).unwrap();

    println!("MCP gateway latency: read_text_file, stdio on both sides, one call at a time");
    println!(
        "machine: {} CPUs (nproc), {}; load average {}",
        command_output("nproc", &[]),
        cpu_model(),
        std::fs::read_to_string("/proc/loadavg")
            .map(|text| text
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "))
            .unwrap_or_else(|_| "?".to_owned())
    );
    println!(
        "rmcp {} (client), node {}, @modelcontextprotocol/server-filesystem {}",
        Implementation::from_build_env().version,
        command_output("node", &["--version"]),
        server_version
    );
    println!(
        "gateway: {} ({})",
        bin.display(),
        command_output(bin.to_str().unwrap_or("toolgate"), &["--version"])
    );
    println!("store folder: {}", dir_path.display());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let setup = Setup {
        bin: &bin,
        entry: &entry,
        dir: &dir_path,
        files: &files,
        calls,
        pause,
    };
    runtime.block_on(async {
        let db = dir_path.join("toolgate.db");
        measure(&setup, "SQLite (file, WAL)", db.to_str().unwrap()).await;
        if let Ok(url) = std::env::var("TOOLGATE_BENCH_POSTGRES")
            && !url.trim().is_empty()
        {
            measure(&setup, "PostgreSQL", &url).await;
        }
    });
    // Let the children see their stdin close before the folder goes.
    std::thread::sleep(Duration::from_millis(200));
    drop(dir);
}
