//! Overload soak: the real gateway binary, 10,000 connections that hold it without using it, and
//! HTTP/2 floods, while normal clients keep sending requests. Prints a Markdown report: the
//! gateway's memory and CPU, the normal clients' latency and errors, what the gateway shed and
//! how it closed the attackers, per phase. Run through `bench/soak.sh`, which builds the binaries
//! and pins the gateway and this driver to different cores.
//!
//! ```text
//! soak GATEWAY_BINARY   (environment: SOAK_ATTACK=10000 SOAK_SECONDS=90 SOAK_H2_SECONDS=15)
//! ```
//!
//! The phases: `baseline` (normal clients alone), `h1 attack` (SOAK_ATTACK connections, kept
//! that many by reconnecting as the gateway closes them: idle ones, slowloris heads, uploads that
//! dribble, responses never read), `recovery` (the attack gone), then HTTP/2 floods one after
//! another (`rapid reset`, `CONTINUATION flood`, `zero window`), each beside the normal clients.

use meshgate_e2e::Upstream;
use meshgate_e2e::h2raw::{self, Frame, RawH2, frame};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NORMAL_CLIENTS: usize = 16;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // The attack runs on threads of the lowest priority, the normal clients on one of their own
    // at the normal one: on a shared core the normal clients then measure the gateway, not the
    // attackers' appetite for the driver's CPU.
    let attack = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(lowest_priority)
        .build()
        .expect("attack runtime");
    let handle = attack.handle().clone();
    attack.block_on(run(handle));
}

/// Lowers this thread's scheduling priority to nice 19 (`renice` on its thread id).
fn lowest_priority() {
    if let Some(tid) = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|t| t.to_string_lossy().into_owned()))
    {
        let _ =
            Command::new("renice").args(["-n", "19", "-p", &tid]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

async fn run(attack_rt: tokio::runtime::Handle) {
    let bin = std::env::args().nth(1).expect("usage: soak GATEWAY_BINARY");
    let attack = env("SOAK_ATTACK", 10_000) as usize;
    let seconds = env("SOAK_SECONDS", 90);
    let h2_seconds = env("SOAK_H2_SECONDS", 15);

    // The normal clients' upstream, and the one the attacks reach.
    let (api, up) = (Upstream::http("api").await, Upstream::http("up").await);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("soak.yaml");
    std::fs::write(&config, soak_config(port, api.addr(), up.addr())).unwrap();
    let mut gw = Gateway::start(&bin, &config);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until_up(addr).await;

    let mut report = Report::default();
    let normal = Normal::start(addr);

    report.phase("baseline", &normal, &mut gw, Duration::from_secs(10), async {}).await;

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(AttackCounts::default());
    let h1_attack = {
        let (stop, counts, attack_rt) = (stop.clone(), counts.clone(), attack_rt.clone());
        async move {
            let mut tasks = Vec::new();
            let kinds = Kind::chosen();
            for i in 0..attack {
                let kind = kinds[i % kinds.len()];
                tasks.push(attack_rt.spawn(attacker(addr, kind, stop.clone(), counts.clone())));
                if i % 200 == 199 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            tasks
        }
    };
    let tasks = report
        .phase(&format!("h1 attack: {attack} connections"), &normal, &mut gw, Duration::from_secs(seconds), h1_attack)
        .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    report.note(format!(
        "h1 attack: {} connections opened; closed by the gateway: {} idle, {} slowloris, {} slow uploads, {} stalled readers; answered: {} uploads 503 (shed by target_limit), {} 408, {} other",
        counts.opened.load(Ordering::Relaxed),
        counts.closed[0].load(Ordering::Relaxed),
        counts.closed[1].load(Ordering::Relaxed),
        counts.closed[2].load(Ordering::Relaxed),
        counts.closed[3].load(Ordering::Relaxed),
        counts.shed.load(Ordering::Relaxed),
        counts.timed_out.load(Ordering::Relaxed),
        counts.other.load(Ordering::Relaxed),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    report.phase("recovery", &normal, &mut gw, Duration::from_secs(10), async {}).await;

    for flood in [Flood::RapidReset, Flood::Continuation, Flood::ZeroWindow] {
        let hits = up.hits();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(FloodCounts::default());
        let spawn = {
            let (stop, seen, rt) = (stop.clone(), seen.clone(), attack_rt.clone());
            async move {
                (0..flood.connections())
                    .map(|_| rt.spawn(flooder(addr, flood, stop.clone(), seen.clone())))
                    .collect::<Vec<_>>()
            }
        };
        let tasks = report.phase(flood.name(), &normal, &mut gw, Duration::from_secs(h2_seconds), spawn).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.abort();
        }
        report.note(format!(
            "{}: {} connections, {} streams or frames sent, closed by the gateway {} times; GOAWAY codes {:?}; streams reset by the gateway {}; upstream requests {}",
            flood.name(),
            seen.connections.load(Ordering::Relaxed),
            seen.sent.load(Ordering::Relaxed),
            seen.closed.load(Ordering::Relaxed),
            seen.goaways(),
            seen.resets.load(Ordering::Relaxed),
            up.hits() - hits,
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    report.phase("after the floods", &normal, &mut gw, Duration::from_secs(5), async {}).await;
    normal.stop();
    report.print(&gw);
    gw.stop();
}

/// The soak's gateway: two workers (one per core), the default limits but `max_connections`
/// (room for the attack beside the normal clients); uploads and large answers on a service with a
/// `target_limit`, so that past it the gateway sheds them with 503 rather than holding more.
fn soak_config(port: u16, api: std::net::SocketAddr, up: std::net::SocketAddr) -> String {
    format!(
        r#"runtime: {{drain_timeout: 1s, watch_config: false}}
listeners: [{{name: main, address: "127.0.0.1:{port}"}}]
limits: {{max_connections: 15000}}
upstreams:
  - {{name: api, targets: [{{address: "{api}"}}]}}
  - {{name: files, targets: [{{address: "{up}"}}], target_limit: {{max_in_flight: 1000, queue: {{size: 100, timeout: 1s}}}}}}
  - {{name: flood, targets: [{{address: "{up}"}}]}}
services:
  - {{name: api, upstream: api}}
  - {{name: files, upstream: files}}
  - {{name: flood, upstream: flood}}
routes:
  - {{name: api, service: api, paths: [/hello]}}
  - {{name: files, service: files, paths: [/upload, /stream]}}
  - {{name: flood, service: flood, paths: [/]}}
"#
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_until_up(addr: std::net::SocketAddr) {
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway did not start on {addr}");
}

/// The gateway process, and its memory and CPU as the kernel counts them.
struct Gateway {
    child: Child,
}

impl Gateway {
    fn start(bin: &str, config: &std::path::Path) -> Gateway {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &std::env::var("SOAK_GATEWAY_CPU").unwrap_or_else(|_| "1".into()), bin, "run", "--config"]);
        let child = cmd
            .arg(config)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the gateway");
        Gateway { child }
    }

    fn status(&self, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
    }

    /// Resident memory, KiB.
    fn rss(&self) -> u64 {
        self.status("VmRSS:")
    }

    /// The most resident memory so far, KiB.
    fn peak(&self) -> u64 {
        self.status("VmHWM:")
    }

    /// CPU time used so far (user + system), seconds.
    fn cpu(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = after.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        // Fields 14 and 15 (utime, stime), counted from the state (field 3) on.
        f.get(10).zip(f.get(11)).map_or(0.0, |(u, s)| (u + s) as f64 / 100.0)
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, |d| d.count())
    }

    fn stop(mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// One normal client: a keep-alive HTTP/1.1 connection sending `GET /hello` in a loop (a new
/// connection after an error), recording each answer's latency.
async fn client(
    addr: std::net::SocketAddr,
    lat: Arc<std::sync::Mutex<Vec<u32>>>,
    err: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut conn) = meshgate_e2e::client::Conn::h1(addr).await else {
            err.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            match tokio::time::timeout(Duration::from_secs(5), conn.get("/hello")).await {
                Ok(Ok(r)) if r.status == 200 => lat.lock().unwrap().push(t.elapsed().as_micros() as u32),
                _ => {
                    err.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

/// Normal clients: keep-alive HTTP/1.1 connections each sending `GET /hello` in a loop.
struct Normal {
    latencies: Arc<std::sync::Mutex<Vec<u32>>>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Normal {
    /// Starts the clients on a thread of their own, at normal priority.
    fn start(addr: std::net::SocketAddr) -> Normal {
        let n = Normal { latencies: Default::default(), errors: Default::default(), stop: Default::default() };
        let (lat, err, stop) = (n.latencies.clone(), n.errors.clone(), n.stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("client runtime");
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let clients: Vec<_> = (0..NORMAL_CLIENTS)
                    .map(|_| tokio::task::spawn_local(client(addr, lat.clone(), err.clone(), stop.clone())))
                    .collect();
                for c in clients {
                    let _ = c.await;
                }
            });
        });
        n
    }

    /// What was measured since the last call.
    fn take(&self) -> (Vec<u32>, u64) {
        (std::mem::take(&mut *self.latencies.lock().unwrap()), self.errors.swap(0, Ordering::Relaxed))
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Connects and sends nothing.
    Idle,
    /// Sends a request head a byte a second.
    Slowloris,
    /// Announces a 10 MB upload and sends 100 bytes every 5 s.
    SlowUpload,
    /// Asks for 10 MB and reads none of it for 65 s.
    StalledReader,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Idle, Kind::Slowloris, Kind::SlowUpload, Kind::StalledReader];

    /// `SOAK_KINDS` (`idle,slowloris,upload,reader`), all by default: to see what one costs.
    fn chosen() -> Vec<Kind> {
        let names = ["idle", "slowloris", "upload", "reader"];
        let chosen = std::env::var("SOAK_KINDS").unwrap_or_default();
        let picked: Vec<Kind> =
            Kind::ALL.iter().zip(names).filter(|(_, n)| chosen.split(',').any(|c| c == *n)).map(|(k, _)| *k).collect();
        if picked.is_empty() { Kind::ALL.to_vec() } else { picked }
    }
}

#[derive(Default)]
struct AttackCounts {
    opened: AtomicU64,
    closed: [AtomicU64; 4],
    shed: AtomicU64,
    timed_out: AtomicU64,
    other: AtomicU64,
}

/// Keeps one attacking connection of `kind` open, reconnecting when the gateway closes it.
async fn attacker(addr: std::net::SocketAddr, kind: Kind, stop: Arc<AtomicBool>, counts: Arc<AttackCounts>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut tcp) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        counts.opened.fetch_add(1, Ordering::Relaxed);
        let (head, trickle, gap): (&[u8], &[u8], u64) = match kind {
            Kind::Idle => (b"", b"", 0),
            Kind::Slowloris => (b"GET /hello HTTP/1.1\r\nHost: t\r\nX-A: ", b"a", 1000),
            Kind::SlowUpload => {
                (b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n", &[b'x'; 100], 5000)
            }
            Kind::StalledReader => (b"GET /stream/10485760 HTTP/1.1\r\nHost: t\r\n\r\n", b"", 0),
        };
        let _ = tcp.write_all(head).await;
        let mut buf = [0u8; 512];
        if matches!(kind, Kind::StalledReader) {
            // Reads nothing for longer than the send timeout, then takes what is there: a
            // connection the gateway closed ends well short of the 10 MB.
            let until = Instant::now() + Duration::from_secs(65);
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let mut total = 0usize;
            let mut big = vec![0u8; 1 << 16];
            let ended = loop {
                match tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut big)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break true,
                    Ok(Ok(n)) => total += n,
                    Err(_) => break false,
                }
            };
            let cut = ended && total < 10 << 20;
            (if cut { &counts.closed[3] } else { &counts.other }).fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let outcome = loop {
            let wait = if gap > 0 { Duration::from_millis(gap) } else { Duration::from_secs(3600) };
            match tokio::time::timeout(wait, tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break None,
                Ok(Ok(n)) => break Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if tcp.write_all(trickle).await.is_err() {
                        break None;
                    }
                }
            }
        };
        match outcome {
            Some(answer) if answer.starts_with("HTTP/1.1 503") => counts.shed.fetch_add(1, Ordering::Relaxed),
            Some(answer) if answer.starts_with("HTTP/1.1 408") => counts.timed_out.fetch_add(1, Ordering::Relaxed),
            Some(_) => counts.other.fetch_add(1, Ordering::Relaxed),
            None => counts.closed[kind as usize].fetch_add(1, Ordering::Relaxed),
        };
        // Drain whatever else comes until the close, then reconnect.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        })
        .await;
    }
}

#[derive(Clone, Copy)]
enum Flood {
    RapidReset,
    Continuation,
    ZeroWindow,
}

impl Flood {
    fn name(self) -> &'static str {
        match self {
            Flood::RapidReset => "h2 rapid reset",
            Flood::Continuation => "h2 CONTINUATION flood",
            Flood::ZeroWindow => "h2 zero window",
        }
    }

    fn connections(self) -> usize {
        match self {
            Flood::RapidReset | Flood::Continuation => 50,
            Flood::ZeroWindow => 200,
        }
    }
}

#[derive(Default)]
struct FloodCounts {
    connections: AtomicU64,
    sent: AtomicU64,
    closed: AtomicU64,
    resets: AtomicU64,
    codes: std::sync::Mutex<std::collections::BTreeMap<u32, u64>>,
}

impl FloodCounts {
    fn goaways(&self) -> Vec<(String, u64)> {
        let name = |c: u32| match c {
            h2raw::NO_ERROR => "NO_ERROR".to_owned(),
            h2raw::PROTOCOL_ERROR => "PROTOCOL_ERROR".to_owned(),
            h2raw::COMPRESSION_ERROR => "COMPRESSION_ERROR".to_owned(),
            h2raw::ENHANCE_YOUR_CALM => "ENHANCE_YOUR_CALM".to_owned(),
            c => format!("{c:#x}"),
        };
        self.codes.lock().unwrap().iter().map(|(c, n)| (name(*c), *n)).collect()
    }

    fn saw(&self, frames: &[Frame], closed: bool) {
        for f in frames {
            if let Some((_, code)) = f.goaway() {
                *self.codes.lock().unwrap().entry(code).or_default() += 1;
            }
            if f.reset().is_some() {
                self.resets.fetch_add(1, Ordering::Relaxed);
            }
        }
        if closed {
            self.closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Keeps one flooding HTTP/2 connection going, reconnecting when the gateway closes it.
async fn flooder(addr: std::net::SocketAddr, flood: Flood, stop: Arc<AtomicBool>, seen: Arc<FloodCounts>) {
    while !stop.load(Ordering::Relaxed) {
        let mut c = RawH2::connect(addr).await;
        seen.connections.fetch_add(1, Ordering::Relaxed);
        match flood {
            Flood::RapidReset => {
                let cancel = h2raw::CANCEL.to_be_bytes();
                let mut id = 1u32;
                while !stop.load(Ordering::Relaxed) && id < 2_000_000 {
                    let mut two = frame(h2raw::HEADERS, h2raw::END_HEADERS | h2raw::END_STREAM, id, h2raw::GET_ROOT);
                    two.extend(frame(h2raw::RST_STREAM, 0, id, &cancel));
                    if !c.send(&two).await {
                        break;
                    }
                    seen.sent.fetch_add(1, Ordering::Relaxed);
                    id += 2;
                    if id % 64 == 1 {
                        tokio::task::yield_now().await;
                    }
                }
            }
            Flood::Continuation => {
                let one = frame(h2raw::CONTINUATION, 0, 1, &[0x00, 0x01, b'x', 0x01, b'y'].repeat(200));
                c.send(&frame(h2raw::HEADERS, 0, 1, h2raw::GET_ROOT)).await;
                while !stop.load(Ordering::Relaxed) && c.send(&one).await {
                    seen.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            Flood::ZeroWindow => {
                // SETTINGS_INITIAL_WINDOW_SIZE = 0: no stream may be sent a byte.
                c.send(&frame(h2raw::SETTINGS, 0, 0, &[0x00, 0x04, 0, 0, 0, 0])).await;
                let get = [
                    0x82, 0x86, 0x01, 0x01, b't', 0x04, 0x0d, b'/', b's', b't', b'r', b'e', b'a', b'm', b'/', b'6',
                    b'5', b'5', b'3', b'6',
                ];
                for i in 0..20u32 {
                    c.send(&frame(h2raw::HEADERS, h2raw::END_HEADERS | h2raw::END_STREAM, 2 * i + 1, &get)).await;
                    seen.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let (frames, closed) = c.read_until(Duration::from_secs(120), |_| stop.load(Ordering::Relaxed)).await;
        seen.saw(&frames, closed);
    }
}

/// The report: a row per phase, and notes.
#[derive(Default)]
struct Report {
    rows: Vec<String>,
    notes: Vec<String>,
}

impl Report {
    /// Runs `during` (which starts the phase's load and returns what it spawned), measures the
    /// normal clients and the gateway for `length`, and records a row.
    async fn phase<T>(
        &mut self,
        name: &str,
        normal: &Normal,
        gw: &mut Gateway,
        length: Duration,
        during: impl std::future::Future<Output = T>,
    ) -> T {
        normal.take();
        let cpu = gw.cpu();
        let started = Instant::now();
        let spawned = during.await;
        let mut rss_max = 0;
        let mut fds_max = 0;
        while started.elapsed() < length {
            tokio::time::sleep(Duration::from_millis(500)).await;
            rss_max = rss_max.max(gw.rss());
            fds_max = fds_max.max(gw.fds());
        }
        let (mut lat, errors) = normal.take();
        let secs = started.elapsed().as_secs_f64();
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0) as f64
                / 1000.0
        };
        self.rows.push(format!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.1} | {errors} | {:.2} | {:.1} | {fds_max} |",
            lat.len() as f64 / secs,
            pct(0.5),
            pct(0.99),
            lat.last().copied().unwrap_or(0) as f64 / 1000.0,
            (gw.cpu() - cpu) / secs,
            rss_max as f64 / 1024.0,
        ));
        spawned
    }

    fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    fn print(&self, gw: &Gateway) {
        println!(
            "| phase | normal req/s | p50 ms | p99 ms | max ms | normal errors | gateway CPU (cores) | gateway RSS max MiB | gateway fds max |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for r in &self.rows {
            println!("{r}");
        }
        println!();
        println!("Gateway peak RSS (VmHWM): {:.1} MiB.", gw.peak() as f64 / 1024.0);
        println!();
        for n in &self.notes {
            println!("- {n}");
        }
    }
}
