//! `cargo xtask autobahn` (and the `autobahn` step of `test`):
//! Autobahn|Testsuite's fuzzingclient against push-ws's echo endpoint
//! (crates/push-ws/examples/autobahn_echo.rs), its report compared with the
//! committed expectation, crates/push-ws/autobahn/expected.json.
//!
//! Autobahn|Testsuite 0.8.2 runs on Python 2.7: a pyenv 2.7.18 (or a
//! `python2.7` on the `PATH`) makes a virtualenv in target/autobahn/venv
//! with the pinned crates/push-ws/autobahn/requirements.txt, kept between
//! runs while that file is unchanged.

use std::collections::BTreeMap;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{banner, find_on_path, missing, run};

/// The cases run: sections 1 to 10 whole; of 12 and 13
/// (permessage-deflate: 1,000 messages per case, each group of 18 cases
/// growing to 512 KiB messages) the first [`DEFLATE_SIZES`] sizes of every
/// group, as the whole of them takes half an hour on these machines.
const CASES: &[&str] = &[
    "1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*",
];
/// The groups of sections 12 and 13, and how many sizes of each run.
const DEFLATE_GROUPS: [(u32, u32); 2] = [(12, 5), (13, 7)];
const DEFLATE_SIZES: u32 = 4;
/// And these, which found a bug (a 64 KiB compressed echo cut short).
const DEFLATE_EXTRA: &[&str] = &["12.2.9", "12.2.14"];
/// The agent name in the reports.
const AGENT: &str = "push-ws";
/// The longest the fuzzingclient may take (it takes a few minutes).
const RUN_LIMIT: Duration = Duration::from_secs(20 * 60);
const HOW_TO_INSTALL: &str = "curl -fsSL https://pyenv.run | bash && ~/.pyenv/bin/pyenv install 2.7.18 \
     (or set PUSH_PYTHON2 to a python2.7)";

/// Results from best to worst: a case fails when it does worse than
/// expected. Anything else Autobahn says (`WRONG CODE`, `UNCLEAN`, …)
/// ranks with `FAILED`.
const RANKS: [&str; 5] = [
    "OK",
    "NON-STRICT",
    "INFORMATIONAL",
    "UNIMPLEMENTED",
    "FAILED",
];

fn rank(behavior: &str) -> usize {
    RANKS
        .iter()
        .position(|r| *r == behavior)
        .unwrap_or(RANKS.len() - 1)
}

/// One case's result: `behavior` and `behaviorClose`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    behavior: String,
    close: String,
}

impl Outcome {
    fn is_ok(&self) -> bool {
        self.behavior == "OK" && self.close == "OK"
    }

    /// Whether either half is worse than `expected`'s.
    fn worse_than(&self, expected: &Outcome) -> bool {
        rank(&self.behavior) > rank(&expected.behavior) || rank(&self.close) > rank(&expected.close)
    }
}

/// Case ids ("9.1.10") in the suite's order, not as strings sort.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct CaseId(Vec<u32>);

impl CaseId {
    fn parse(id: &str) -> Option<CaseId> {
        id.split('.')
            .map(|n| n.parse().ok())
            .collect::<Option<_>>()
            .map(CaseId)
    }

    fn section(&self) -> u32 {
        self.0.first().copied().unwrap_or(0)
    }
}

impl std::fmt::Display for CaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

type Results = BTreeMap<CaseId, Outcome>;

/// Runs the suite: `Ok(false)` when Python 2.7 is missing outside CI (said
/// loudly). With `bless`, the expectation is rewritten from this run.
pub(crate) fn autobahn(root: &Path, bless: bool) -> Result<bool, String> {
    let Some(python) = python2() else {
        return missing::<()>("Python 2.7 (for Autobahn|Testsuite 0.8.2)", HOW_TO_INSTALL)
            .map(|_| false);
    };
    let dir = target_dir(root).join("autobahn");
    let wstest = install(root, &dir, &python)?;
    banner("[autobahn] building the echo server (crates/push-ws/examples/autobahn_echo.rs)");
    if !run(
        root,
        "cargo",
        &[
            "build",
            "--quiet",
            "-p",
            "push-ws",
            "--example",
            "autobahn_echo",
        ],
        &[],
    ) {
        return Err("building the autobahn_echo example failed".into());
    }
    let echo = Echo::start(&target_dir(root).join("debug/examples/autobahn_echo"))?;
    let reports = dir.join("reports");
    let _ = fs::remove_dir_all(&reports);
    let spec = dir.join("fuzzingclient.json");
    fs::write(&spec, spec_json(&echo.url, &reports))
        .map_err(|e| format!("writing {}: {e}", spec.display()))?;
    banner(&format!(
        "[autobahn] wstest -m fuzzingclient against {} (1-10, and 12-13 in part)",
        echo.url
    ));
    let began = Instant::now();
    run_limited(&dir, &wstest, &spec)?;
    drop(echo);
    println!(
        "the fuzzingclient took {:.1}s",
        began.elapsed().as_secs_f64()
    );
    let index = reports.join("index.json");
    let text =
        fs::read_to_string(&index).map_err(|e| format!("reading {}: {e}", index.display()))?;
    let actual = report(&text)?;
    let expected_path = root.join("crates/push-ws/autobahn/expected.json");
    if bless {
        fs::write(&expected_path, expected_json(&actual))
            .map_err(|e| format!("writing {}: {e}", expected_path.display()))?;
        println!("wrote {}", expected_path.display());
    }
    let expected_text = fs::read_to_string(&expected_path)
        .map_err(|e| format!("reading {}: {e}", expected_path.display()))?;
    let expected = expectation(&expected_text)?;
    table(&actual);
    let problems = compare(&actual, &expected);
    println!("HTML report: {}", reports.join("index.html").display());
    if problems.is_empty() {
        Ok(true)
    } else {
        for problem in &problems {
            eprintln!("  {problem}");
        }
        Err(format!(
            "{} Autobahn case(s) did worse than crates/push-ws/autobahn/expected.json",
            problems.len()
        ))
    }
}

fn target_dir(root: &Path) -> PathBuf {
    env::var("CARGO_TARGET_DIR").map_or_else(|_| root.join("target"), PathBuf::from)
}

/// Python 2.7: `PUSH_PYTHON2`, pyenv's 2.7.18 (`$PYENV_ROOT`, `pyenv root`,
/// or ~/.pyenv), or `python2.7` on the `PATH`.
fn python2() -> Option<PathBuf> {
    if let Some(python) = env::var_os("PUSH_PYTHON2") {
        return Some(PathBuf::from(python));
    }
    let from_pyenv = Command::new("pyenv")
        .arg("root")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let home = env::var_os("HOME").map(|home| PathBuf::from(home).join(".pyenv"));
    env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .into_iter()
        .chain(from_pyenv)
        .chain(home)
        .map(|root| root.join("versions/2.7.18/bin/python2.7"))
        .find(|python| python.is_file())
        .or_else(|| find_on_path("python2.7"))
}

/// The virtualenv with Autobahn|Testsuite in `dir`/venv, made unless the
/// requirements it was made with are today's; its `wstest`.
fn install(root: &Path, dir: &Path, python: &Path) -> Result<PathBuf, String> {
    let requirements = root.join("crates/push-ws/autobahn/requirements.txt");
    let pinned =
        fs::read(&requirements).map_err(|e| format!("reading {}: {e}", requirements.display()))?;
    let venv = dir.join("venv");
    let wstest = venv.join("bin/wstest");
    let stamp = venv.join("push-requirements.txt");
    banner(&format!(
        "[autobahn] Autobahn|Testsuite 0.8.2 in {} (Python 2.7: {})",
        venv.display(),
        python.display()
    ));
    if wstest.is_file() && fs::read(&stamp).is_ok_and(|made| made == pinned) {
        println!("up to date");
        return Ok(wstest);
    }
    let _ = fs::remove_dir_all(&venv);
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let python = python.display().to_string();
    let tools = dir.join("virtualenv").display().to_string();
    let venv_path = venv.display().to_string();
    let pip = venv.join("bin/pip").display().to_string();
    let requirements = requirements.display().to_string();
    let step = |program: &str, args: &[&str], env: &[(&str, &str)]| {
        if run(dir, program, args, env) {
            Ok(())
        } else {
            Err(format!(
                "installing Autobahn|Testsuite: `{program} {}` failed",
                args.join(" ")
            ))
        }
    };
    let quiet = "--disable-pip-version-check";
    // virtualenv 20.22 dropped Python 2.7: an older one, kept apart.
    step(
        &python,
        &[
            "-m",
            "pip",
            "install",
            "-q",
            quiet,
            "--target",
            &tools,
            "virtualenv<20.22",
        ],
        &[],
    )?;
    step(
        &python,
        &["-m", "virtualenv", "--quiet", &venv_path],
        &[("PYTHONPATH", &tools)],
    )?;
    step(&pip, &["install", "-q", quiet, "-r", &requirements], &[])?;
    fs::write(&stamp, pinned).map_err(|e| format!("writing {}: {e}", stamp.display()))?;
    Ok(wstest)
}

/// The echo server, killed when dropped.
struct Echo {
    child: Child,
    url: String,
}

impl Echo {
    /// Starts `binary` on a free port and waits for its `listening on ADDR`.
    fn start(binary: &Path) -> Result<Echo, String> {
        let mut child = Command::new(binary)
            .arg("0")
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let mut line = String::new();
        let read = child
            .stdout
            .take()
            .map(|out| BufReader::new(out).read_line(&mut line));
        let mut echo = Echo {
            child,
            url: String::new(),
        };
        match (read, line.trim().strip_prefix("listening on ")) {
            (Some(Ok(_)), Some(addr)) => {
                echo.url = format!("ws://{addr}/echo");
                Ok(echo)
            }
            // Dropping it stops it.
            _ => Err(format!(
                "the echo server did not say where it listens (it said {line:?})"
            )),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the fuzzingclient with `spec` in `dir`, for at most [`RUN_LIMIT`].
fn run_limited(dir: &Path, wstest: &Path, spec: &Path) -> Result<(), String> {
    let mut child = Command::new(wstest)
        .args(["-m", "fuzzingclient", "-s"])
        .arg(spec)
        .current_dir(dir)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", wstest.display()))?;
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("the fuzzingclient failed: {status}")),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the fuzzingclient took longer than {RUN_LIMIT:?}"));
            }
            Err(e) => return Err(format!("waiting for the fuzzingclient: {e}")),
        }
    }
}

fn spec_json(url: &str, reports: &Path) -> String {
    let deflate = DEFLATE_GROUPS.iter().flat_map(|&(section, groups)| {
        (1..=groups).flat_map(move |group| {
            (1..=DEFLATE_SIZES).map(move |size| format!("{section}.{group}.{size}"))
        })
    });
    let cases: Vec<String> = CASES
        .iter()
        .map(|c| quote(c))
        .chain(deflate.map(|c| quote(&c)))
        .chain(DEFLATE_EXTRA.iter().map(|c| quote(c)))
        .collect();
    format!(
        "{{\n  \"outdir\": {},\n  \"servers\": [{{\"agent\": {}, \"url\": {}}}],\n  \
         \"cases\": [{}],\n  \"exclude-cases\": [],\n  \"exclude-agent-cases\": {{}}\n}}\n",
        quote(&reports.display().to_string()),
        quote(AGENT),
        quote(url),
        cases.join(", "),
    )
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The agent's results in the fuzzingclient's index.json:
/// `{AGENT: {CASE: {"behavior": …, "behaviorClose": …, …}}}`.
fn report(text: &str) -> Result<Results, String> {
    let json = Json::parse(text).map_err(|e| format!("index.json: {e}"))?;
    let cases = json
        .get(AGENT)
        .ok_or_else(|| format!("index.json holds no results for {AGENT}"))?;
    outcomes(cases).map_err(|e| format!("index.json: {e}"))
}

/// The committed expectation: `{CASE: {"behavior": …, "behaviorClose": …}}`.
fn expectation(text: &str) -> Result<Results, String> {
    let json = Json::parse(text).map_err(|e| format!("expected.json: {e}"))?;
    outcomes(&json).map_err(|e| format!("expected.json: {e}"))
}

fn outcomes(cases: &Json) -> Result<Results, String> {
    let Json::Object(cases) = cases else {
        return Err("expected an object of cases".into());
    };
    cases
        .iter()
        .map(|(id, case)| {
            let id = CaseId::parse(id).ok_or_else(|| format!("{id:?} is not a case id"))?;
            let field = |name: &str| match case.get(name) {
                Some(Json::String(s)) => Ok(s.clone()),
                _ => Err(format!("case {id} has no {name}")),
            };
            let outcome = Outcome {
                behavior: field("behavior")?,
                close: field("behaviorClose")?,
            };
            Ok((id, outcome))
        })
        .collect()
}

/// Every way `actual` falls short of `expected`.
fn compare(actual: &Results, expected: &Results) -> Vec<String> {
    let mut problems = Vec::new();
    let mut better = 0;
    for (id, want) in expected {
        match actual.get(id) {
            None => problems.push(format!("{id}: expected, but not in the report")),
            Some(got) if got.worse_than(want) => problems.push(format!(
                "{id}: {} / close {} (expected {} / close {})",
                got.behavior, got.close, want.behavior, want.close
            )),
            Some(got) if got != want => better += 1,
            Some(_) => {}
        }
    }
    for (id, got) in actual {
        if !expected.contains_key(id) {
            problems.push(format!(
                "{id}: {} / close {}, not in the expectation (run `cargo xtask autobahn --bless`)",
                got.behavior, got.close
            ));
        }
    }
    if better > 0 {
        println!(
            "{better} case(s) did better than expected: `cargo xtask autobahn --bless` records it"
        );
    }
    problems
}

/// The summary: per section, how many cases got each result; then every
/// case that is not OK on both counts.
fn table(results: &Results) {
    banner("[autobahn] results by section (behavior; a close not OK is counted apart)");
    println!(
        "{:>8} {:>6} {:>5} {:>11} {:>14} {:>14} {:>7} {:>9}",
        "section",
        "cases",
        "OK",
        "NON-STRICT",
        "INFORMATIONAL",
        "UNIMPLEMENTED",
        "FAILED",
        "close≠OK"
    );
    let mut sections: BTreeMap<u32, [usize; 7]> = BTreeMap::new();
    for (id, outcome) in results {
        let counts = sections.entry(id.section()).or_default();
        counts[0] += 1;
        counts[1 + rank(&outcome.behavior)] += 1;
        if outcome.close != "OK" {
            counts[6] += 1;
        }
    }
    let mut all = [0; 7];
    for (section, counts) in &sections {
        row(&section.to_string(), counts);
        for (total, n) in all.iter_mut().zip(counts) {
            *total += n;
        }
    }
    row("all", &all);
    for (id, outcome) in results.iter().filter(|(_, o)| !o.is_ok()) {
        println!("  {id}: {} / close {}", outcome.behavior, outcome.close);
    }
}

fn row(name: &str, c: &[usize; 7]) {
    println!(
        "{name:>8} {:>6} {:>5} {:>11} {:>14} {:>14} {:>7} {:>9}",
        c[0], c[1], c[2], c[3], c[4], c[5], c[6]
    );
}

/// The expectation file for `results`, one case a line, in the suite's order.
fn expected_json(results: &Results) -> String {
    let lines: Vec<String> = results
        .iter()
        .map(|(id, o)| {
            format!(
                "  {}: {{\"behavior\": {}, \"behaviorClose\": {}}}",
                quote(&id.to_string()),
                quote(&o.behavior),
                quote(&o.close)
            )
        })
        .collect();
    format!("{{\n{}\n}}\n", lines.join(",\n"))
}

/// JSON, as much as the reports need (the xtask has no dependencies).
#[derive(Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut parser = Parser {
            chars: text.char_indices().peekable(),
            depth: 0,
        };
        let value = parser.value()?;
        parser.space();
        match parser.chars.next() {
            None => Ok(value),
            Some((at, c)) => Err(format!("unexpected {c:?} at byte {at}")),
        }
    }

    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

struct Parser<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    depth: usize,
}

impl Parser<'_> {
    fn space(&mut self) {
        while self
            .chars
            .next_if(|(_, c)| c.is_ascii_whitespace())
            .is_some()
        {}
    }

    fn expect(&mut self, want: char) -> Result<(), String> {
        self.space();
        match self.chars.next() {
            Some((_, c)) if c == want => Ok(()),
            Some((at, c)) => Err(format!("expected {want:?}, found {c:?} at byte {at}")),
            None => Err(format!("expected {want:?}, found the end")),
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.space();
        let Some(&(at, c)) = self.chars.peek() else {
            return Err("unexpected end".into());
        };
        match c {
            '{' | '[' if self.depth >= 64 => Err(format!("nested too deep at byte {at}")),
            '{' => {
                self.depth += 1;
                let fields = self.list('{', '}', |p| {
                    let key = p.string()?;
                    p.expect(':')?;
                    Ok((key, p.value()?))
                })?;
                self.depth -= 1;
                Ok(Json::Object(fields))
            }
            '[' => {
                self.depth += 1;
                let items = self.list('[', ']', Parser::value)?;
                self.depth -= 1;
                Ok(Json::Array(items))
            }
            '"' => self.string().map(Json::String),
            _ => {
                let mut word = String::new();
                while let Some((_, c)) = self
                    .chars
                    .next_if(|(_, c)| c.is_ascii_alphanumeric() || "+-.".contains(*c))
                {
                    word.push(c);
                }
                match word.as_str() {
                    "null" => Ok(Json::Null),
                    "true" => Ok(Json::Bool(true)),
                    "false" => Ok(Json::Bool(false)),
                    number => number
                        .parse()
                        .map(Json::Number)
                        .map_err(|_| format!("unexpected {number:?} at byte {at}")),
                }
            }
        }
    }

    /// `open` item (`,` item)* `close`, or `open` `close`.
    fn list<T>(
        &mut self,
        open: char,
        close: char,
        mut item: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        self.expect(open)?;
        let mut items = Vec::new();
        self.space();
        if self.chars.next_if(|(_, c)| *c == close).is_some() {
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            self.space();
            match self.chars.next() {
                Some((_, ',')) => {}
                Some((_, c)) if c == close => return Ok(items),
                Some((at, c)) => return Err(format!("unexpected {c:?} at byte {at}")),
                None => return Err("unexpected end".into()),
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.chars.next() {
                None => return Err("unterminated string".into()),
                Some((_, '"')) => return Ok(out),
                Some((at, '\\')) => match self.chars.next().map(|(_, c)| c) {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('u') => {
                        let hex: String = (0..4)
                            .filter_map(|_| self.chars.next().map(|(_, c)| c))
                            .collect();
                        let code = u32::from_str_radix(&hex, 16)
                            .map_err(|_| format!("bad \\u escape at byte {at}"))?;
                        // A lone surrogate (half of a pair) is not a char:
                        // the reports have none that matter.
                        out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                    }
                    Some(c @ ('"' | '\\' | '/')) => out.push(c),
                    _ => return Err(format!("bad escape at byte {at}")),
                },
                Some((_, c)) => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(behavior: &str, close: &str) -> Outcome {
        Outcome {
            behavior: behavior.into(),
            close: close.into(),
        }
    }

    #[test]
    fn a_report_is_read_and_compared() {
        let index = r#"{"push-ws": {
            "1.1.1": {"behavior": "OK", "behaviorClose": "OK", "duration": 2, "remoteCloseCode": 1000, "reportfile": "push_ws_case_1_1_1.json"},
            "6.4.3": {"behavior": "NON-STRICT", "behaviorClose": "OK", "duration": 2001, "remoteCloseCode": null, "reportfile": "x\u0041.json"},
            "9.1.10": {"behavior": "FAILED", "behaviorClose": "WRONG CODE", "duration": 1, "remoteCloseCode": 1009, "reportfile": "y"}
        }}"#;
        let actual = report(index).unwrap();
        let ids: Vec<String> = actual.keys().map(ToString::to_string).collect();
        assert_eq!(ids, ["1.1.1", "6.4.3", "9.1.10"]);
        // What it writes, it reads back as it was.
        assert_eq!(expectation(&expected_json(&actual)).unwrap(), actual);
        assert!(compare(&actual, &actual).is_empty());
        let mut better = actual.clone();
        better.insert(CaseId::parse("6.4.3").unwrap(), outcome("OK", "OK"));
        // Doing better passes; doing worse, or missing a case, does not.
        assert!(compare(&better, &actual).is_empty());
        assert_eq!(compare(&actual, &better).len(), 1);
        let mut fewer = actual.clone();
        fewer.remove(&CaseId::parse("1.1.1").unwrap());
        assert_eq!(compare(&fewer, &actual).len(), 1);
        assert_eq!(compare(&actual, &fewer).len(), 1);
    }

    #[test]
    fn ranks_follow_autobahns_order() {
        let ok = outcome("OK", "OK");
        assert!(outcome("NON-STRICT", "OK").worse_than(&ok));
        assert!(outcome("OK", "WRONG CODE").worse_than(&outcome("OK", "INFORMATIONAL")));
        assert!(!outcome("INFORMATIONAL", "OK").worse_than(&outcome("UNIMPLEMENTED", "OK")));
        assert!(!outcome("UNCLEAN", "OK").worse_than(&outcome("FAILED", "OK")));
    }

    #[test]
    fn bad_json_is_an_error() {
        for bad in ["", "{", "{\"a\" 1}", "[1,]", "\"\\q\"", "nul", "{} x"] {
            assert!(Json::parse(bad).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(Json::parse(&deep).is_err());
        assert_eq!(
            Json::parse(r#"[1.5e3, true, null, "a\"b"]"#).unwrap(),
            Json::Array(vec![
                Json::Number(1500.0),
                Json::Bool(true),
                Json::Null,
                Json::String("a\"b".into())
            ])
        );
    }
}
