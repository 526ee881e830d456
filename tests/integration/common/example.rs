//! The examples as programs: their binaries, built once per test run, and the quickstart as a
//! running server process.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

/// A loopback port nothing listens on (for a program the test starts).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on the loopback `port`, at most `limit`.
pub async fn wait_for_port(port: u16, limit: Duration) {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(started.elapsed() < limit, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The example's binary, built (or found up to date) once per test run.
///
/// `cargo test` builds examples only when no target is selected, so `cargo test --test
/// integration` would run a missing or stale binary; when run by cargo, the test therefore asks
/// cargo to build the example (a no-op when it is fresh). Run directly, it looks beside the test
/// binary: `target/<profile>/deps/integration-…` → `target/<profile>/examples/admin`.
pub fn binary(name: &'static str) -> &'static Path {
    static BINARIES: Mutex<BTreeMap<&'static str, &'static Path>> = Mutex::new(BTreeMap::new());
    let mut binaries = BINARIES.lock().unwrap();
    binaries.entry(name).or_insert_with(|| {
        let path = match std::env::var_os("CARGO") {
            Some(cargo) => build_example(&cargo, name),
            None => beside_test_binary(name),
        };
        Box::leak(path.into_boxed_path())
    })
}

fn build_example(cargo: &std::ffi::OsStr, name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|name| name.to_str())
        .unwrap_or("debug");
    let mut command = Command::new(cargo);
    command.args([
        "build",
        "--example",
        name,
        "--message-format=json-render-diagnostics",
        "--manifest-path",
        concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
    ]);
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "`cargo build --example {name}` failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|message| {
            message["reason"] == "compiler-artifact"
                && message["target"]["name"] == name
                && message["target"]["kind"][0] == "example"
        })
        .and_then(|message| message["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no executable for the example")
}

fn beside_test_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "the {name} example is not built: no {}. Run `cargo build --example {name}` first (or \
         run the tests through cargo, which builds it)",
        binary.display()
    );
    binary
}

/// The quickstart example, running as a server process on a free loopback port; killed when
/// dropped.
pub struct Quickstart {
    child: Child,
    pub addr: SocketAddr,
}

impl Quickstart {
    /// Starts the quickstart with `env` (`DATABASE_URL`, `AUTH_CACHE`, …) and waits until it
    /// accepts connections.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut command = Command::new(binary("quickstart"));
        command
            .env("PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .env("DEMO_USERS", "on")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().unwrap();
        wait_for_port(port, Duration::from_secs(60)).await;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Self { child, addr }
    }

    /// A field of `/proc/<pid>/status`, in kB (`VmRSS`, `VmHWM`).
    pub fn memory_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
