//! `--json` on every command prints exactly one JSON document on stdout, with `outcome` and an
//! `exit_code` equal to the process's exit status, against a real nginx. `man` and
//! `completions` print roff and shell code instead and are exempt.

mod output_util;
mod support;

use std::net::SocketAddr;
use std::process::Output;

use output_util::*;
use support::*;

/// The document, after checking it is the only thing on stdout and agrees with the status.
fn doc(out: &Output, command: &str) -> serde_json::Value {
    let doc = json(out);
    assert!(doc["outcome"].is_string(), "no outcome: {doc:#}");
    assert_eq!(
        doc["exit_code"].as_i64(),
        out.status.code().map(i64::from),
        "{doc:#}"
    );
    assert_eq!(doc["command"], command, "{doc:#}");
    doc
}

fn run_json(site: &Site, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.push("--json");
    site.run(&all)
}

#[test]
fn every_command_prints_one_json_document_with_an_outcome() {
    let site = Site::start();
    let outcome = |args: &[&str], command: &str| {
        let out = run_json(&site, args);
        doc(&out, command)["outcome"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(outcome(&["targets"], "targets"), "ok");
    assert_eq!(outcome(&["probe"], "probe"), "ok");
    assert_eq!(outcome(&["history"], "history"), "ok");
    assert_eq!(outcome(&["diff"], "diff"), "ok");
    assert_eq!(outcome(&["init"], "init"), "recorded");
    assert_eq!(outcome(&["check"], "check"), "ok");
    assert_eq!(outcome(&["status"], "status"), "ok");
    assert_eq!(outcome(&["-y"], "reload"), "unchanged");
    assert_eq!(outcome(&["recover"], "recover"), "ok");

    // A change goes live, then `rollback` takes it back to the baseline.
    let v2 = HttpBackend::start(SocketAddr::new(site.ip, 0), "app-v2");
    site.nginx.write_http(&site.server_for(&v2.host_port()));
    assert_eq!(outcome(&["reload", "-y"], "reload"), "reloaded");
    assert_eq!(site.get().1, "app-v2");
    assert_eq!(outcome(&["rollback", "-y"], "rollback"), "reloaded");
    assert_eq!(site.get().1, "app-v1");

    let out = site
        .cmd()
        .args(["edit", "--json", &site.nginx.conf.display().to_string()])
        .env("VISUAL", "true")
        .output()
        .expect("run");
    assert_eq!(doc(&out, "edit")["outcome"], "unchanged");

    let history = doc(&run_json(&site, &["history"]), "history");
    assert!(
        history["history"].as_array().is_some_and(|h| h.len() >= 3),
        "{history:#}"
    );
}

#[test]
fn a_refused_reload_in_json_names_the_target_and_the_hint() {
    let site = Site::started_with_baseline();
    let wrong = SocketAddr::new(site.ip, free_port(site.ip));
    site.nginx.write_http(&site.server_for(&wrong.to_string()));
    let out = run_json(&site, &["-y"]);
    let d = doc(&out, "reload");
    assert_eq!(d["outcome"], "refused");
    assert_eq!(d["exit_code"], 1);
    let failing: Vec<_> = d["probe"]["results"]
        .as_array()
        .expect("probe results")
        .iter()
        .filter(|r| r["severity"] == "failure")
        .collect();
    assert_eq!(failing.len(), 1, "{d:#}");
    assert!(
        failing[0]["hints"]
            .to_string()
            .contains(&site.app.host_port()),
        "{d:#}"
    );
    assert!(out.stderr.is_empty(), "{}", text(&out));
}

/// The impact analysis is two steps of the report: `diff` (the files against last-good and
/// last-good's tree parsed, on a thread of its own) and `impact` (the servers compared), which
/// waits for it.
#[test]
fn a_reload_reports_the_diff_and_the_impact_as_steps() {
    let site = Site::started_with_baseline();
    let v2 = HttpBackend::start(SocketAddr::new(site.ip, 0), "app-v2");
    site.nginx.write_http(&site.server_for(&v2.host_port()));
    let d = doc(&run_json(&site, &["-y"]), "reload");
    assert_eq!(d["outcome"], "reloaded", "{d:#}");
    let step = |name: &str| {
        let st = (d["steps"].as_array().expect("steps").iter())
            .find(|st| st["name"] == name)
            .unwrap_or_else(|| panic!("no {name} step: {d:#}"))
            .clone();
        let started = st["started_ms"].as_f64().expect("started_ms");
        (
            started,
            started + st["elapsed_ms"].as_f64().expect("elapsed_ms"),
            st,
        )
    };
    let (_, diffed, _) = step("diff");
    let (compared, _, impact) = step("impact");
    assert!(
        compared >= diffed,
        "the impact before its diff ended: {d:#}"
    );
    let said = format!(
        "{} of {} servers affected",
        d["impact"]["affected"].as_array().map_or(0, Vec::len),
        d["impact"]["total"]
    );
    assert!(
        impact["detail"]
            .as_str()
            .is_some_and(|t| t.starts_with(&said) && !said.starts_with("0 ")),
        "{said}: {d:#}"
    );
}

#[test]
fn errors_and_usage_errors_are_json_too() {
    let out = std::process::Command::new(BIN)
        .args([
            "targets",
            "--json",
            "-c",
            "/nonexistent/nginx.conf",
            "--config",
            "/dev/null",
        ])
        .output()
        .expect("run");
    let d = doc(&out, "targets");
    assert_eq!(d["outcome"], "error");
    assert_eq!(d["exit_code"], 2);
    assert!(
        d["error"]
            .as_str()
            .is_some_and(|e| e.contains("/nonexistent/nginx.conf")),
        "{d:#}"
    );

    let out = std::process::Command::new(BIN)
        .args(["--json", "frobnicate"])
        .output()
        .expect("run");
    let d = doc(&out, "");
    assert_eq!(d["outcome"], "error");
    assert!(
        d["error"]
            .as_str()
            .is_some_and(|e| e.contains("frobnicate")),
        "{d:#}"
    );
}

/// `--report FILE` writes the document `--json` would print, while the text is printed as
/// usual: the git hooks show the text to the pusher and read the outcome of exit 4 from it.
#[test]
fn report_file_holds_the_json_document_beside_the_text() {
    let site = Site::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("report.json");
    let dead = SocketAddr::new(site.ip, free_port(site.ip)).to_string();
    site.nginx.write_http(&site.server_for(&dead));
    let out = site.run(&["-y", "--report", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("refused: "),
        "the text as usual: {stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("the report")).expect("JSON");
    assert_eq!(report["outcome"], "refused", "{report:#}");
    assert_eq!(report["exit_code"], 1, "{report:#}");
    assert_eq!(report["command"], "reload", "{report:#}");
    assert_eq!(site.get().1, "app-v1", "nginx untouched");
}

/// The paths of every `null` in `v`: `health.results.0.error`.
fn nulls(v: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match v {
        serde_json::Value::Null => out.push(at.to_string()),
        serde_json::Value::Array(a) => {
            (a.iter().enumerate()).for_each(|(i, x)| nulls(x, &join(&i.to_string()), out))
        }
        serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| nulls(x, &join(k), out)),
        _ => {}
    }
}

/// docs/json.md: "Fields that would be empty are left out, so test for presence". A good
/// reload (a diff, checks that passed, a proven reload) and `status` hold no `null`: a script
/// testing `has("error")` saw every passing check as an error.
#[test]
fn a_good_reload_and_status_leave_empty_fields_out() {
    let site = Site::start();
    assert_eq!(
        doc(&run_json(&site, &["init"]), "init")["outcome"],
        "recorded"
    );
    let v2 = HttpBackend::start(SocketAddr::new(site.ip, 0), "app-v2");
    site.nginx.write_http(&site.server_for(&v2.host_port()));
    for (args, command) in [(&["-y"][..], "reload"), (&["status"][..], "status")] {
        let d = doc(&run_json(&site, args), command);
        let mut found = Vec::new();
        nulls(&d, "", &mut found);
        assert!(found.is_empty(), "{command}: null at {found:?}: {d:#}");
    }
    assert_eq!(site.get().1, "app-v2");
}
