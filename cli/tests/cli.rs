//! The `oldfilm` binary end to end: degrade → restore → score on a generated clip, and the
//! error paths (missing file, not a video, unwritable output, bad extension).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn oldfilm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oldfilm"))
        .args(args)
        .output()
        .expect("oldfilm runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oldfilm-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A 30-frame 160x120 test clip, losslessly encoded.
fn make_clip(dir: &Path) -> PathBuf {
    let path = dir.join("clip.mkv");
    let status = Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            "num-buffers=30",
            "pattern=ball",
            "!",
            "video/x-raw,format=I420,width=160,height=120,framerate=25/1",
        ])
        .args(["!", "avenc_ffv1", "!", "matroskamux", "!", "filesink"])
        .arg(format!("location={}", path.display()))
        .status()
        .expect("gst-launch-1.0 runs");
    assert!(status.success());
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts a failed run printed exactly one `error:` line mentioning `needle`, and no panic.
fn assert_one_line_error(o: &Output, needle: &str) {
    assert!(!o.status.success(), "should fail");
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{err}");
    assert!(lines[0].contains(needle), "'{needle}' not in: {}", lines[0]);
    assert!(!err.contains("panicked"), "panic:\n{err}");
}

#[test]
fn degrade_restore_score_round_trip() {
    let dir = temp_dir("roundtrip");
    let clip = make_clip(&dir);
    let (degraded, mask, restored, sheet) = (
        dir.join("d.mkv"),
        dir.join("m.mkv"),
        dir.join("r.mkv"),
        dir.join("s.png"),
    );
    let o = oldfilm(&["degrade", s(&clip), s(&degraded), "--seed", "3", "--mask", s(&mask)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = oldfilm(&["restore", s(&degraded), s(&restored)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("30 frames in, 30 out"), "{}", stderr(&o));
    let o = oldfilm(&[
        "score",
        "--json",
        "--ref",
        s(&clip),
        "--input",
        s(&degraded),
        "--mask",
        s(&mask),
        "--sheet",
        s(&sheet),
        s(&restored),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json = String::from_utf8_lossy(&o.stdout);
    assert!(json.contains("\"frames\": 30"), "{json}");
    let field = |name: &str| -> f64 {
        let start = json.find(&format!("\"{name}\": ")).unwrap() + name.len() + 4;
        json[start..].split([',', '}']).next().unwrap().trim().parse().unwrap()
    };
    assert!(field("psnr_y") > field("psnr_input"), "{json}");
    let png = std::fs::read(&sheet).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}

#[test]
fn missing_input_is_one_clear_line() {
    let dir = temp_dir("missing");
    let o = oldfilm(&["restore", "/nonexistent/film.mkv", s(&dir.join("out.mkv"))]);
    assert_one_line_error(&o, "input file '/nonexistent/film.mkv' does not exist");
}

#[test]
fn a_file_that_is_not_a_video_is_one_clear_line() {
    let dir = temp_dir("notvideo");
    let text = dir.join("notes.txt");
    std::fs::write(&text, "this is not a film\n".repeat(100)).unwrap();
    let o = oldfilm(&["restore", s(&text), s(&dir.join("out.mkv"))]);
    assert_one_line_error(&o, "is not a video GStreamer can decode");
}

#[test]
fn unwritable_output_and_bad_extension_are_refused_before_work() {
    let dir = temp_dir("unwritable");
    let clip = make_clip(&dir);
    let o = oldfilm(&["restore", s(&clip), "/nonexistent/dir/out.mkv"]);
    assert_one_line_error(&o, "cannot write '/nonexistent/dir/out.mkv'");
    let o = oldfilm(&["restore", s(&clip), s(&dir.join("out.avi"))]);
    assert_one_line_error(&o, "must end in .mkv");
    let o = oldfilm(&["restore", s(&clip), s(&dir.join("out.mkv")), "--set", "no-equals"]);
    assert_one_line_error(&o, "NAME=VALUE");
}

#[test]
fn a_truncated_file_fails_clearly_and_keeps_a_valid_output() {
    let dir = temp_dir("truncated");
    let clip = make_clip(&dir);
    let bytes = std::fs::read(&clip).unwrap();
    let cut = dir.join("cut.mkv");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let out = dir.join("out.mkv");
    let o = oldfilm(&["restore", s(&cut), s(&out)]);
    // Matroska tolerates a cut file: either it restores the frames that are there, or it
    // reports the failure in one line; either way the output must be a playable file.
    if !o.status.success() {
        assert_one_line_error(&o, "cut.mkv");
    }
    let check = Command::new("gst-launch-1.0")
        .args(["-q", "filesrc"])
        .arg(format!("location={}", out.display()))
        .args(["!", "matroskademux", "!", "avdec_ffv1", "!", "fakesink"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "output is not a valid file: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn restore_runs_a_diffusion_engine_and_reports_an_unusable_device_in_one_line() {
    let dir = temp_dir("engine");
    let clip = make_clip(&dir);
    let engine = format!("{}/../engines/fixtures/tiny-turbo", env!("CARGO_MANIFEST_DIR"));
    let out = dir.join("out.mkv");
    let o = oldfilm(&["restore", s(&clip), s(&out), "--engine", &engine, "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("30 frames in, 30 out"), "{}", stderr(&o));
    // The CPU-only onnxruntime wheel has no CUDA provider: asking for it is a clear error.
    let o = oldfilm(&[
        "restore",
        s(&clip),
        s(&dir.join("cuda.mkv")),
        "--engine",
        &engine,
        "--device",
        "cuda",
    ]);
    assert_one_line_error(&o, "cannot use diffusion engine");
    let o = oldfilm(&["restore", s(&clip), s(&out), "--engine", "/nonexistent/bundle"]);
    assert_one_line_error(&o, "engine bundle '/nonexistent/bundle' is not a folder");
}

#[test]
fn info_opens_an_engine_and_says_where_it_runs() {
    let bundle = concat!(env!("CARGO_MANIFEST_DIR"), "/../engines/fixtures/tiny-lcm");
    let o = oldfilm(&["info", "--engine", bundle, "--device", "cpu"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("kind Lcm, 64x64 tiles"), "{out}");
    assert!(out.contains("runs on CPUExecutionProvider (device=cpu"), "{out}");
    let o = oldfilm(&["info", "--engine", "/nonexistent/bundle"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("error: engine bundle /nonexistent/bundle: no such folder"),
        "{err}"
    );
}
