//! The ready-made pipeline scripts in `pipelines/`, each run in its headless `--test` mode
//! against the plugin built in this workspace.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where the test profile's `libgstoldfilm.so` is (the test script builds it first).
fn plugin_dir() -> PathBuf {
    let profile_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(|deps| deps.parent()).map(|p| p.to_path_buf()))
        .expect("test binary lives in target/<profile>/deps");
    assert!(
        profile_dir.join("libgstoldfilm.so").exists(),
        "{} has no libgstoldfilm.so: run `cargo build -p gst-plugin-oldfilm` first (scripts/test.sh does)",
        profile_dir.display()
    );
    profile_dir
}

fn run_script(name: &str) -> String {
    let output = Command::new("bash")
        .arg(repo().join("pipelines").join(name))
        .arg("--test")
        .env("OLDFILM_PLUGIN_DIR", plugin_dir())
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{name} --test failed:\n{text}");
    text
}

#[test]
fn restore_file_script_keeps_every_frame() {
    assert!(run_script("restore-file.sh").contains("frames: 40 (expected 40)"));
}

#[test]
fn telecine_preview_script_runs_headless() {
    assert!(run_script("telecine-preview.sh").contains("frames: 50 (expected 50)"));
}

#[test]
fn playout_script_delivers_over_udp_and_srt() {
    assert!(run_script("playout.sh").contains("udp 60 (expected 60)"));
}
