//! The project's own commands, run as `cargo xtask <command>`.
//!
//! - `test`: everything CI checks: formatting, clippy (warnings are errors),
//!   rustdoc (warnings are errors), every published crate built from its
//!   `.crate` (`cargo package`), and every test of the workspace with all
//!   features, doc tests and property tests included. First it installs the
//!   third-party clients the tests run against (npm packages, pinned in
//!   tests/third-party) into target/third-party. A program it needs and
//!   cannot find (node, npm) is reported loudly with how to install it, and
//!   only the tests that need it are skipped; under `CI=true` it is a failure.
//!   The Redis tests start their own `redis-server` (found on the `PATH`,
//!   passed as `PUSH_TEST_REDIS_SERVER`) on free ports, persistence off;
//!   the Sentinel tests start a master, a replica and three sentinels
//!   (`redis-server FILE --sentinel`) from the same binary, the Cluster
//!   tests six `--cluster-enabled` nodes joined by `redis-cli --cluster
//!   create` (found on the `PATH`, passed as `PUSH_TEST_REDIS_CLI`). push-server's
//!   nginx test runs nginx (found on the `PATH` or as /usr/sbin/nginx,
//!   passed as `PUSH_TEST_NGINX`) in front of push-server.
//! - `e2e` (also the last part of `test`): push-server's demo page and
//!   push.js in headless Chromium, driven by playwright-core from Node
//!   (tests/e2e/demo.mjs); Chromium missing is handled like node. `e2e`
//!   also runs the TLS browser test (push-server's tests/tls.rs, ten event
//!   streams to one origin over HTTP/2 in tests/e2e/h2_sse.mjs), which
//!   `test` runs with the other tests.
//! - `fuzz [--seconds N] [TARGET…]`: the fuzz targets of fuzz/ (one per
//!   parser of untrusted input; docs/fuzzing.md), built with libFuzzer's
//!   coverage instrumentation on stable Rust, each run for N seconds (60 by
//!   default) over its committed seed corpus (fuzz/corpus/TARGET) and what
//!   earlier runs found (target/fuzz/corpus/TARGET). A crash fails the run,
//!   its input saved in target/fuzz/artifacts/TARGET/. `test` runs every
//!   target for a few seconds, about a minute in all. Building needs a C++
//!   compiler (libFuzzer is C++), handled as node is when missing.
//! - `autobahn` (also a step of `test`): Autobahn|Testsuite's fuzzingclient
//!   (cases 1-10, and the smaller half of 12-13, permessage-deflate) against
//!   push-ws's echo endpoint, compared with the
//!   committed crates/push-ws/autobahn/expected.json: a case worse than
//!   expected fails; a summary table by section. It needs Python 2.7 (a
//!   pyenv 2.7.18), handled like node when missing; `--bless` rewrites the
//!   expectation from the run. See autobahn.rs.
//! - `bench`: the benchmarks, with a summary table of each comparison: the
//!   hub against `tokio::sync::broadcast`, and the servers under load
//!   (push-bench: push against bare hyper, axum and Nchan).
//!
//! Standard library only, so that it builds in a second on a fresh clone.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

mod autobahn;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test     formatting, clippy, rustdoc, packaging and every test (what CI runs),
           the browser tests included
  e2e      the browser tests alone: push-server's demo page and push.js in
           headless Chromium (tests/e2e/demo.mjs; refreshes docs/demo.png),
           and event streams over HTTP/2 with TLS (tests/e2e/h2_sse.mjs)
  fuzz [--seconds N] [TARGET...]
           the fuzz targets (fuzz/fuzz_targets; docs/fuzzing.md), each run for
           N seconds (default 60) over its seed corpus; all of them by default
  autobahn Autobahn|Testsuite (cases 1-10, part of 12-13) against push-ws's echo endpoint,
           compared with crates/push-ws/autobahn/expected.json
           (`--bless` rewrites that file from the run)
  bench    the benchmarks, then a summary of each comparison:
           push-core's hub against tokio::sync::broadcast (criterion), then
           the servers under load (push-bench: push, hyper, axum, Nchan)
           (extra arguments go to push-bench run, e.g. `--only poll`)
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("e2e") => e2e(),
        Some("autobahn") => autobahn_command(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprint!("xtask: unknown command `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// One command the suite runs, with what it is for.
struct Step {
    name: &'static str,
    program: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

/// The facade's transport features. The feature check builds every subset,
/// and each alone with its client (a workspace build unifies features and
/// would hide a crate that forgot one), then runs the routes test with each
/// alone: `--features sse` really serves SSE, and only SSE.
const TRANSPORTS: [&str; 4] = ["poll", "longpoll", "sse", "ws"];

/// The facade's server features (`serve`, with `http2` and `tls`), each
/// set checked with no transport and with all of them: what `serve` and the
/// connection code compile to depends on both.
const SERVING: [&str; 4] = ["serve", "serve,http2", "serve,tls", "serve,http2,tls"];

/// Each transport's feature alone with its client, and with tower (each
/// crate forwards the feature its own way), and the Redis hub alone.
const SINGLE_WITH_CLIENT: [&str; 9] = [
    "poll,client",
    "longpoll,client",
    "sse,client",
    "ws,client",
    "poll,tower",
    "longpoll,tower",
    "sse,tower",
    "ws,tower",
    "redis",
];

/// Every subset of [`TRANSPORTS`], as `--features` values ("" for none).
fn transport_powerset() -> Vec<String> {
    (0..1u32 << TRANSPORTS.len())
        .map(|mask| {
            TRANSPORTS
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, name)| *name)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

const TEST_STEPS: &[Step] = &[
    Step {
        name: "format",
        program: "cargo",
        args: &["fmt", "--all", "--", "--check"],
        env: &[],
    },
    Step {
        name: "clippy",
        program: "cargo",
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    // The fuzz crate is not a workspace member (docs/fuzzing.md): its
    // formatting and lints are checked on their own.
    Step {
        name: "format fuzz",
        program: "cargo",
        args: &["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"],
        env: &[],
    },
    Step {
        name: "clippy fuzz",
        program: "cargo",
        args: &[
            "clippy",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--target-dir",
            "target",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    Step {
        name: "rustdoc",
        program: "cargo",
        args: &["doc", "--workspace", "--all-features", "--no-deps"],
        env: &[("RUSTDOCFLAGS", "-D warnings")],
    },
    // Every published crate builds from its own `.crate`, as crates.io
    // would build it (push-bench and xtask are not published).
    Step {
        name: "package",
        program: "cargo",
        args: &[
            "package",
            "--workspace",
            "--exclude",
            "push-bench",
            "--exclude",
            "xtask",
            "--allow-dirty",
            "--target-dir",
            "target/package-verify",
        ],
        env: &[],
    },
    Step {
        name: "tests",
        program: "cargo",
        args: &["test", "--workspace", "--all-features"],
        env: &[],
    },
];

fn test() -> ExitCode {
    let root = workspace_root();
    let started = Instant::now();
    let mut results = Vec::new();
    let mut test_env: Vec<(&str, String)> = Vec::new();
    banner("[0] third-party clients: npm ci in target/third-party");
    let began = Instant::now();
    match third_party_clients(&root) {
        Ok(Some(node_path)) => {
            test_env.push(("PUSH_TEST_NODE_PATH", node_path));
            results.push(("third-party", true, began.elapsed()));
        }
        Ok(None) => results.push(("third-party (SKIPPED)", true, began.elapsed())),
        Err(e) => {
            eprintln!("xtask: {e}");
            results.push(("third-party", false, began.elapsed()));
        }
    }
    banner("[0] Redis: the tests start their own redis-server (persistence off), and sentinels");
    let redis = find_on_path("redis-server");
    results.push(test_program(
        redis,
        ["redis", "redis (SKIPPED)"],
        "PUSH_TEST_REDIS_SERVER",
        &mut test_env,
        ("Redis (redis-server)", "apt-get install -y redis-server"),
    ));
    // The Cluster tests join their six nodes with `redis-cli --cluster create`.
    results.push(test_program(
        find_on_path("redis-cli"),
        ["redis-cli", "redis-cli (SKIPPED)"],
        "PUSH_TEST_REDIS_CLI",
        &mut test_env,
        (
            "redis-cli (Redis Cluster tests)",
            "apt-get install -y redis-tools",
        ),
    ));
    banner("[0] nginx: push-server's tests run it in front of push-server (tests/nginx.rs)");
    let nginx = find_on_path("nginx").or_else(|| {
        let sbin = PathBuf::from("/usr/sbin/nginx");
        sbin.exists().then_some(sbin)
    });
    results.push(test_program(
        nginx,
        ["nginx", "nginx (SKIPPED)"],
        "PUSH_TEST_NGINX",
        &mut test_env,
        ("nginx", "apt-get install -y nginx"),
    ));
    banner("[0] features: every subset of the transports builds, each alone serves");
    let began = Instant::now();
    let sets: Vec<String> = transport_powerset()
        .into_iter()
        .chain(SINGLE_WITH_CLIENT.iter().map(|s| (*s).to_owned()))
        .chain(SERVING.iter().flat_map(|serving| {
            [
                (*serving).to_owned(),
                format!("{},{serving}", TRANSPORTS.join(",")),
            ]
        }))
        .collect();
    let checked = sets.iter().all(|features| {
        println!("check --no-default-features --features {features:?}");
        run(
            &root,
            "cargo",
            &[
                "check",
                "--quiet",
                "--no-default-features",
                "--features",
                features,
            ],
            &[],
        )
    });
    // Each transport alone really serves (and only it): the routes test.
    let served = checked
        && TRANSPORTS.iter().all(|feature| {
            // The test serves with `serve` (HTTP/1.1 only).
            let features = format!("{feature},serve");
            println!("test --no-default-features --features {features} --test routes_by_feature");
            run(
                &root,
                "cargo",
                &[
                    "test",
                    "--quiet",
                    "--no-default-features",
                    "--features",
                    &features,
                    "--test",
                    "routes_by_feature",
                ],
                &[],
            )
        });
    let features_ok = checked && served;
    results.push(("features", features_ok, began.elapsed()));
    for (i, step) in TEST_STEPS.iter().enumerate() {
        banner(&format!(
            "[{}/{}] {}: {} {}",
            i + 1,
            TEST_STEPS.len(),
            step.name,
            step.program,
            step.args.join(" ")
        ));
        let began = Instant::now();
        let mut env: Vec<(&str, &str)> = step.env.to_vec();
        if step.name == "tests" {
            env.extend(test_env.iter().map(|(k, v)| (*k, v.as_str())));
        }
        if step.name == "package" {
            forget_packaged_sources();
            // What an earlier run built from those sources (its own target
            // directory): cargo takes a registry crate of the same version as
            // unchanged.
            let _ = fs::remove_dir_all(root.join("target").join("package-verify"));
        }
        let ok = run(&root, step.program, step.args, &env);
        results.push((step.name, ok, began.elapsed()));
    }
    banner(&format!(
        "[fuzz] every fuzz target, about {FUZZ_TEST_SECONDS} s in all, over its seed corpus"
    ));
    let began = Instant::now();
    results.push(match fuzz_all(&root, None, &[]) {
        Ok(true) => ("fuzz", true, began.elapsed()),
        Ok(false) => ("fuzz (SKIPPED)", true, began.elapsed()),
        Err(e) => {
            eprintln!("xtask: {e}");
            ("fuzz", false, began.elapsed())
        }
    });
    results.push(autobahn_step(&root, false));
    banner("[e2e] the demo page and push.js in headless Chromium");
    let began = Instant::now();
    let node_path = test_env
        .iter()
        .find(|(k, _)| *k == "PUSH_TEST_NODE_PATH")
        .map(|(_, v)| v.clone());
    // The suite's screenshot goes under target/; `cargo xtask e2e` refreshes
    // docs/demo.png.
    results.push(
        match browser_tests(&root, node_path, "target/e2e/demo.png") {
            Ok(true) => ("e2e", true, began.elapsed()),
            Ok(false) => ("e2e (SKIPPED)", true, began.elapsed()),
            Err(e) => {
                eprintln!("xtask: {e}");
                ("e2e", false, began.elapsed())
            }
        },
    );
    summary(&results, started.elapsed())
}

/// `cargo xtask e2e`: the browser tests alone.
fn e2e() -> ExitCode {
    let root = workspace_root();
    let started = Instant::now();
    let node_path = match third_party_clients(&root) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("xtask: {e}");
            return summary(&[("e2e", false, started.elapsed())], started.elapsed());
        }
    };
    let result = match browser_tests(&root, node_path.clone(), "docs/demo.png") {
        Ok(true) => ("e2e", true),
        Ok(false) => ("e2e (SKIPPED)", true),
        Err(e) => {
            eprintln!("xtask: {e}");
            ("e2e", false)
        }
    };
    let mut results = vec![(result.0, result.1, started.elapsed())];
    // `cargo xtask test` runs this one with the other tests.
    banner("[e2e] event streams over HTTP/2 with TLS in headless Chromium");
    let began = Instant::now();
    let env: Vec<(&str, &str)> = node_path
        .as_deref()
        .map(|path| ("PUSH_TEST_NODE_PATH", path))
        .into_iter()
        .collect();
    let ok = run(
        &root,
        "cargo",
        &[
            "test",
            "--quiet",
            "-p",
            "push-server",
            "--test",
            "tls",
            "chromium",
            "--",
            "--nocapture",
        ],
        &env,
    );
    results.push(("e2e tls", ok, began.elapsed()));
    summary(&results, started.elapsed())
}

/// `cargo xtask autobahn [--bless]`: the Autobahn step alone.
fn autobahn_command(args: &[String]) -> ExitCode {
    let bless = match args {
        [] => false,
        [flag] if flag == "--bless" => true,
        _ => {
            eprint!("xtask: autobahn takes only --bless\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let result = autobahn_step(&workspace_root(), bless);
    summary(&[result], started.elapsed())
}

/// Autobahn|Testsuite against push-ws, as a result line.
fn autobahn_step(root: &Path, bless: bool) -> (&'static str, bool, Duration) {
    banner("[autobahn] Autobahn|Testsuite's fuzzingclient against push-ws's echo endpoint");
    let began = Instant::now();
    match autobahn::autobahn(root, bless) {
        Ok(true) => ("autobahn", true, began.elapsed()),
        Ok(false) => ("autobahn (SKIPPED)", true, began.elapsed()),
        Err(e) => {
            eprintln!("xtask: {e}");
            ("autobahn", false, began.elapsed())
        }
    }
}

/// The browsers this looks for, in order (or `PUSH_CHROMIUM`).
const CHROMIUMS: [&str; 4] = ["chromium", "chromium-browser", "google-chrome", "chrome"];

/// Builds push-server, then runs tests/e2e/demo.mjs: Chromium (headless,
/// driven by playwright-core) against the real server, with the demo page's
/// screenshot written to `screenshot`. `Ok(false)` when Chromium or Node is
/// missing outside CI (said loudly).
fn browser_tests(root: &Path, node_path: Option<String>, screenshot: &str) -> Result<bool, String> {
    let Some(node_path) = node_path else {
        return missing::<()>("Node.js (node and npm)", "apt-get install -y nodejs npm")
            .map(|_| false);
    };
    let chromium = env::var("PUSH_CHROMIUM").ok().or_else(|| {
        CHROMIUMS
            .iter()
            .find_map(|name| find_on_path(name))
            .map(|path| path.display().to_string())
    });
    let Some(chromium) = chromium else {
        return missing::<()>("Chromium", "apt-get install -y chromium").map(|_| false);
    };
    if !run(
        root,
        "cargo",
        &["build", "--quiet", "-p", "push-server"],
        &[],
    ) {
        return Err("building push-server failed".into());
    }
    let target = env::var("CARGO_TARGET_DIR").map_or_else(|_| root.join("target"), PathBuf::from);
    let server = target.join("debug/push-server");
    let server = server.display().to_string();
    let ok = run(
        root,
        "node",
        &[
            "tests/e2e/demo.mjs",
            "--server",
            &server,
            "--chromium",
            &chromium,
            "--screenshot",
            screenshot,
        ],
        &[("NODE_PATH", &node_path)],
    );
    if ok {
        Ok(true)
    } else {
        Err("the browser tests failed".into())
    }
}

/// `true` under CI (`CI=true`), where a missing program fails the suite.
fn in_ci() -> bool {
    env::var("CI").is_ok_and(|ci| ci == "true")
}

/// A program the tests run, `found` or not: its path passed to the tests as
/// `var`, or reported `missing` (`what`, `install`) as [`missing`] says; the
/// result line, named `names[0]`, or `names[1]` when skipped.
fn test_program(
    found: Option<PathBuf>,
    names: [&'static str; 2],
    var: &'static str,
    test_env: &mut Vec<(&'static str, String)>,
    (what, install): (&str, &str),
) -> (&'static str, bool, Duration) {
    let began = Instant::now();
    match found {
        Some(path) => {
            println!("{}", path.display());
            test_env.push((var, path.display().to_string()));
            (names[0], true, began.elapsed())
        }
        None => match missing::<()>(what, install) {
            Ok(_) => (names[1], true, began.elapsed()),
            Err(e) => {
                eprintln!("xtask: {e}");
                (names[0], false, began.elapsed())
            }
        },
    }
}

/// Says loudly that `what` is missing; `Err` under CI, `Ok(None)` (skip) else.
fn missing<T>(what: &str, install: &str) -> Result<Option<T>, String> {
    let message = format!("{what} is not installed; install it with: {install}");
    eprintln!("\n{}\n*** {message}", "*".repeat(72));
    if in_ci() {
        eprintln!(
            "*** CI=true: this is a failure, not a skip.\n{}\n",
            "*".repeat(72)
        );
        Err(message)
    } else {
        eprintln!(
            "*** The tests that need it are SKIPPED on this machine.\n{}\n",
            "*".repeat(72)
        );
        Ok(None)
    }
}

fn on_path(program: &str) -> bool {
    find_on_path(program).is_some()
}

/// Where `program` is on the `PATH`.
fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Installs the pinned npm packages (tests/third-party) into
/// target/third-party unless they are there already; returns the
/// `node_modules` path the tests get as `PUSH_TEST_NODE_PATH`.
fn third_party_clients(root: &Path) -> Result<Option<String>, String> {
    if !on_path("node") || !on_path("npm") {
        return missing("Node.js (node and npm)", "apt-get install -y nodejs npm");
    }
    let source = root.join("tests/third-party");
    let target = root.join("target/third-party");
    let lock = fs::read(source.join("package-lock.json"))
        .map_err(|e| format!("reading tests/third-party/package-lock.json: {e}"))?;
    let installed = target.join("node_modules/.package-lock.json");
    let up_to_date = fs::read(target.join("package-lock.json")).is_ok_and(|old| old == lock)
        && installed.is_file();
    if up_to_date {
        println!("up to date");
    } else {
        fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
        for file in ["package.json", "package-lock.json"] {
            fs::copy(source.join(file), target.join(file))
                .map_err(|e| format!("copying {file}: {e}"))?;
        }
        let args = ["ci", "--no-audit", "--no-fund", "--loglevel=error"];
        if !run(&target, "npm", &args, &[]) {
            return Err("`npm ci` in target/third-party failed".into());
        }
    }
    Ok(Some(target.join("node_modules").display().to_string()))
}

/// How long `cargo xtask fuzz` runs each target by default, in seconds.
const FUZZ_SECONDS: u64 = 60;

/// About how long `cargo xtask test` fuzzes, in seconds, shared by the targets.
const FUZZ_TEST_SECONDS: u64 = 60;

/// The coverage instrumentation libFuzzer needs, as cargo-fuzz passes it
/// without a sanitizer: stable rustc options only, so no nightly toolchain
/// (docs/fuzzing.md says why no AddressSanitizer). `--cfg fuzzing`, debug
/// assertions and overflow checks as cargo-fuzz builds.
const FUZZ_RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions -Coverflow-checks";

/// `cargo xtask fuzz [--seconds N] [TARGET…]`.
fn fuzz(args: &[String]) -> ExitCode {
    let root = workspace_root();
    let started = Instant::now();
    let mut seconds = FUZZ_SECONDS;
    let mut chosen = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--seconds" {
            match args.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0) {
                Some(n) => seconds = n,
                None => {
                    eprint!("xtask: --seconds needs a positive whole number\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            }
        } else {
            chosen.push(arg.clone());
        }
    }
    let ok = match fuzz_all(&root, Some(seconds), &chosen) {
        Ok(true) => ("fuzz", true),
        Ok(false) => ("fuzz (SKIPPED)", true),
        Err(e) => {
            eprintln!("xtask: {e}");
            ("fuzz", false)
        }
    };
    summary(&[(ok.0, ok.1, started.elapsed())], started.elapsed())
}

/// Builds the fuzz targets, then runs each of `chosen` (all when empty) for
/// `seconds` each, or for a share of [`FUZZ_TEST_SECONDS`] when `None`.
/// `Ok(false)` when no C++ compiler is found outside CI (said loudly).
fn fuzz_all(root: &Path, seconds: Option<u64>, chosen: &[String]) -> Result<bool, String> {
    let all = fuzz_targets(root)?;
    if let Some(unknown) = chosen.iter().find(|name| !all.contains(name)) {
        return Err(format!(
            "no fuzz target `{unknown}`; the targets are: {}",
            all.join(", ")
        ));
    }
    let targets = if chosen.is_empty() {
        all
    } else {
        chosen.to_vec()
    };
    // libfuzzer-sys compiles libFuzzer (C++) with the `cc` crate.
    let compiler = env::var("CXX").unwrap_or_else(|_| "c++".into());
    if !on_path(&compiler) {
        return missing::<()>(
            "a C++ compiler (libFuzzer is C++)",
            "apt-get install -y g++",
        )
        .map(|_| false);
    }
    let host = host_triple()?;
    // `--target`: the flags then reach the targets' code, not build
    // scripts and proc macros (which are not linked with libFuzzer).
    let build = [
        "build",
        "--release",
        "--manifest-path",
        "fuzz/Cargo.toml",
        "--target",
        &host,
        "--target-dir",
        "target/fuzz",
        "--bins",
    ];
    println!("RUSTFLAGS=\"{FUZZ_RUSTFLAGS}\" cargo {}", build.join(" "));
    if !run(root, "cargo", &build, &[("RUSTFLAGS", FUZZ_RUSTFLAGS)]) {
        return Err("building the fuzz targets failed".into());
    }
    let count = u64::try_from(targets.len()).unwrap_or(1).max(1);
    let each = seconds.unwrap_or_else(|| FUZZ_TEST_SECONDS.div_ceil(count));
    let bins = root.join("target/fuzz").join(&host).join("release");
    let crashed: Vec<&String> = targets
        .iter()
        .filter(|target| !fuzz_target(root, &bins, target, each))
        .collect();
    if crashed.is_empty() {
        Ok(true)
    } else {
        Err(format!(
            "fuzz targets failed: {} (docs/fuzzing.md: a crash becomes a regression test)",
            crashed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// The fuzz targets: fuzz/fuzz_targets/*.rs, by name.
fn fuzz_targets(root: &Path) -> Result<Vec<String>, String> {
    let dir = root.join("fuzz/fuzz_targets");
    let entries = fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let mut targets: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            let stem = path.file_stem()?.to_str()?.to_owned();
            (path.extension()? == "rs").then_some(stem)
        })
        .collect();
    targets.sort();
    Ok(targets)
}

/// Runs one fuzz target for `seconds` over its seed corpus and what earlier
/// runs found (the first directory, where libFuzzer adds what it finds);
/// its output goes to target/fuzz/logs/TARGET.log. `true` when nothing
/// crashed.
fn fuzz_target(root: &Path, bins: &Path, target: &str, seconds: u64) -> bool {
    let fuzz = root.join("target/fuzz");
    let found = fuzz.join("corpus").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    let logs = fuzz.join("logs");
    for dir in [&found, &artifacts, &logs] {
        if let Err(e) = fs::create_dir_all(dir) {
            eprintln!("xtask: creating {}: {e}", dir.display());
            return false;
        }
    }
    let log_path = logs.join(format!("{target}.log"));
    let Ok(log) = fs::File::create(&log_path) else {
        eprintln!("xtask: cannot write {}", log_path.display());
        return false;
    };
    let seeds = root.join("fuzz/corpus").join(target);
    println!("{target}: {seconds} s (log: {})", log_path.display());
    let status = Command::new(bins.join(target))
        .arg(&found)
        .arg(&seeds)
        .arg(format!("-max_total_time={seconds}"))
        // An input that takes this long is a hang: a failure too.
        .arg("-timeout=10")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .current_dir(root)
        .stdout(
            log.try_clone()
                .map_or_else(|_| std::process::Stdio::null(), Into::into),
        )
        .stderr(log)
        .status();
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let ok = status.as_ref().is_ok_and(std::process::ExitStatus::success);
    if ok {
        // libFuzzer's last progress line: runs, coverage, corpus, speed.
        let done = text
            .lines()
            .rev()
            .find(|l| {
                l.strip_prefix('#')
                    .is_some_and(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            })
            .unwrap_or("");
        println!("  ok  {done}");
    } else {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        for line in tail.iter().rev() {
            eprintln!("  | {line}");
        }
        eprintln!(
            "  FAILED: {target} ({}); the input is in {}/; reproduce with\n    {} <that file>",
            status.map_or_else(|e| e.to_string(), |s| s.to_string()),
            artifacts.display(),
            bins.join(target).display()
        );
    }
    ok
}

/// The host's target triple (`rustc -vV`).
fn host_triple() -> Result<String, String> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("could not run `{rustc} -vV`: {e}"))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| format!("`{rustc} -vV` names no host"))
}

fn bench(extra: &[String]) -> ExitCode {
    let root = workspace_root();
    println!("load average before: {}", load_average());
    let mut results = Vec::new();
    for name in ["idle_memory", "fanout"] {
        let args = ["bench", "-p", "push-core", "--bench", name];
        banner(&format!("bench {name}: cargo {}", args.join(" ")));
        let began = Instant::now();
        let ok = run(&root, "cargo", &args, &[]);
        results.push((name, ok, began.elapsed()));
    }
    fanout_table(&root.join("target/criterion/fanout"));
    let mut args = vec![
        "run",
        "--release",
        "--quiet",
        "-p",
        "push-bench",
        "--",
        "run",
    ];
    args.extend(extra.iter().map(String::as_str));
    banner(&format!("servers under load: cargo {}", args.join(" ")));
    let began = Instant::now();
    let ok = run(&root, "cargo", &args, &[]);
    results.push(("push-bench", ok, began.elapsed()));
    println!("load average after: {}", load_average());
    summary(&results, results.iter().map(|r| r.2).sum())
}

/// Prints memory hub vs tokio broadcast from criterion's saved estimates.
fn fanout_table(dir: &Path) {
    let mean_ns = |bench: &str, n: &str| -> Option<f64> {
        let json = fs::read_to_string(dir.join(bench).join(n).join("new/estimates.json")).ok()?;
        let mean = &json[json.find("\"mean\"")?..];
        let value = &mean[mean.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
        let end = value.find([',', '}'])?;
        value[..end].trim().parse().ok()
    };
    banner("fanout: publish one message, wait until every subscriber has it");
    println!(
        "{:>12}  {:>14}  {:>16}  {:>12}",
        "subscribers", "memory_hub", "tokio_broadcast", "hub/broadcast"
    );
    for n in ["1", "1000", "10000"] {
        match (mean_ns("memory_hub", n), mean_ns("tokio_broadcast", n)) {
            (Some(hub), Some(broadcast)) => println!(
                "{n:>12}  {:>14}  {:>16}  {:>12.2}",
                human_ns(hub),
                human_ns(broadcast),
                hub / broadcast
            ),
            _ => println!("{n:>12}  (not measured in this run)"),
        }
    }
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn run(root: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> bool {
    let mut command = Command::new(program);
    command.args(args).current_dir(root);
    for (key, value) in env {
        command.env(key, value);
    }
    match command.status() {
        Ok(status) => status.success(),
        Err(e) => {
            eprintln!("xtask: could not run `{program}`: {e}");
            false
        }
    }
}

fn summary(results: &[(&str, bool, Duration)], total: Duration) -> ExitCode {
    banner("summary");
    for (name, ok, took) in results {
        let mark = if *ok { "ok    " } else { "FAILED" };
        println!("  {mark}  {name:<12} {:>7.1}s", took.as_secs_f64());
    }
    let failed: Vec<_> = results.iter().filter(|r| !r.1).map(|r| r.0).collect();
    println!("  total {:.1}s", total.as_secs_f64());
    if failed.is_empty() {
        println!("\nall {} steps passed", results.len());
        ExitCode::SUCCESS
    } else {
        eprintln!("\nFAILED: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

fn banner(title: &str) {
    println!("\n==> {title}");
}

/// The workspace root: the xtask crate's parent directory.
/// Removes the sources cargo extracted from an earlier `cargo package` of
/// this workspace. cargo verifies each crate against its siblings' new
/// `.crate` files through a local registry, but extracts a `NAME-VERSION`
/// only once: without this, a second run builds against the first run's
/// sources (same version, older code) and fails, or passes, for nothing.
fn forget_packaged_sources() {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let Some(sources) = cargo_home.map(|home| home.join("registry").join("src")) else {
        return;
    };
    let Ok(registries) = fs::read_dir(&sources) else {
        return;
    };
    for registry in registries.flatten() {
        // crates.io's sources are `index.crates.io-…`; the local registry
        // `cargo package` makes has a name of its own.
        if registry.file_name().to_string_lossy().starts_with("index.") {
            continue;
        }
        let Ok(crates) = fs::read_dir(registry.path()) else {
            continue;
        };
        for krate in crates.flatten() {
            if krate.file_name().to_string_lossy().starts_with("push-") {
                let _ = fs::remove_dir_all(krate.path());
            }
        }
    }
}

fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.clone(), Path::to_path_buf)
}
