//! The command line: configuration checking, refusing bad configuration, demo data.

use std::process::Command;

use crate::fixture::BIN;

const GOOD_DATASET: &str = r#"
[[datasets]]
id = "stops"
title = "Bus stops"
owner = "Municipal Transport Bureau"
open_type = "unconditional"
format = "csv"
update_frequency = "yearly"
last_updated = "2025-01-01T00:00:00Z"
license = "CC-BY-4.0"
source = { file = "stops.csv" }
fields = [{ name = "stop_id", type = "string" }]
"#;

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_accepts_a_good_configuration_and_the_shipped_example() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "k.toml", &format!("data_dir = \"{}\"\n{GOOD_DATASET}", dir.path().display()));
    let out = Command::new(BIN).args(["check-config", config.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok, 1 datasets"));

    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/kaifang.toml");
    let out = Command::new(BIN).args(["check-config", shipped]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_config_reports_every_error_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = write(
        dir.path(),
        "transport.toml",
        &format!(
            "{GOOD_DATASET}\n[[datasets]]\nid = \"stops\"\ntitle = \"Again\"\nowner = \"O\"\nopen_type = \"unconditional\"\n\
             format = \"csv\"\nupdate_frequency = \"yearly\"\nlast_updated = \"2025-01-01T00:00:00Z\"\nlicense = \"x\"\n\
             source = {{ url = \"ftp://example/x\" }}\nfields = [{{ name = \"a\", type = \"int64\" }}]\n"
        ),
    );
    let main = write(
        dir.path(),
        "kaifang.toml",
        "include = [\"transport.toml\", \"missing.toml\"]\n\n[http]\nlisten = \"not an address\"\n\n[limits]\nmax_sort_rows = 0\n",
    );
    let out = Command::new(BIN).args(["check-config", main.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let main_name = main.display().to_string();
    let catalog_name = catalog.display().to_string();
    for expected in [
        format!("{main_name}:1: include[1]: cannot read"),
        format!("{main_name}:4: http.listen: invalid socket address syntax"),
        format!("{main_name}:7: limits.max_sort_rows: must be greater than 0"),
        format!("{catalog_name}:15: datasets[1].id: dataset id `stops` is already declared at {catalog_name}:3"),
        format!("{catalog_name}:23: datasets[1].source.url: `ftp://example/x` is not an absolute http:// URL"),
    ] {
        assert!(stderr.contains(&expected), "missing `{expected}` in:\n{stderr}");
    }

    // `serve` refuses the same configuration with the same messages and never listens.
    let out = Command::new(BIN).args(["serve", "--config", main.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{main_name}:4: http.listen")));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
}

#[test]
fn check_config_names_the_line_of_a_syntax_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "k.toml", "[http]\nlisten = \"127.0.0.1:80\"\n[limits\n");
    let out = Command::new(BIN).args(["check-config", config.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{}:3:", config.display())));
}

#[test]
fn demo_data_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for out in [&a, &b] {
        let status =
            Command::new(BIN).args(["demo-data", "--rows", "1000", "--out", out.to_str().unwrap()]).status().unwrap();
        assert!(status.success());
    }
    let mut names: Vec<_> = std::fs::read_dir(&a).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names.len(), 5);
    for name in names {
        assert_eq!(std::fs::read(a.join(&name)).unwrap(), std::fs::read(b.join(&name)).unwrap(), "{name:?}");
    }
    let csv = std::fs::read_to_string(a.join("bus-arrivals.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1001);
}

#[test]
fn check_config_locates_errors_in_declared_agreements() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(crate::fixture::copy_shipped_config(dir.path())).unwrap();
    let broken = shipped.replace("legal_rep_mobile = \"cn_mobile\"", "legal_rep_mobile = \"blur\"");
    let config = write(dir.path(), "kaifang.toml", &broken);
    let out = Command::new(BIN).args(["check-config", config.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line_of = |needle: &str| broken.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let expected = format!(
        "{}:{}: agreements[0].datasets[0].masks.legal_rep_mobile: unknown mask `blur`",
        config.display(),
        line_of("\"blur\"")
    );
    assert!(stderr.contains(&expected), "missing `{expected}` in:\n{stderr}");
}

#[test]
fn keys_can_be_issued_before_the_gateway_ever_ran() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = Command::new(BIN)
        .args(["keys", "issue", "--principal", "demo-analytics", "--data-dir", data])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap();
    assert!(key.starts_with("kf_") && key.trim().len() == 3 + 16 + 1 + 64, "{key}");
    let out = Command::new(BIN).args(["keys", "issue", "--principal", "nobody", "--data-dir", data]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no principal `nobody`"));
}
