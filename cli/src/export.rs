//! `oldfilm export`: writes an engine bundle with the project's Python exporter (`engines/export/export.py`),
//! which is built into this binary so that an installed `oldfilm` needs no source tree. The exporter runs in the
//! user's Python (torch, diffusers, onnx: see `requirements.txt`, also built in); the bundle it writes is then
//! opened with the same checks the element makes, so a bundle that `export` accepts is one the element can load.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::Command;

const EXPORT_PY: &str = include_str!("../../engines/export/export.py");
const REQUIREMENTS: &str = include_str!("../../engines/export/requirements.txt");

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// One-step SD-Turbo style.
    Turbo,
    /// Latent consistency model: a few steps, run as a stream batch.
    Lcm,
    /// Any RGB-to-RGB model (with --identity or --image-model).
    Image,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Range {
    /// The model takes and gives values in [0, 1].
    ZeroOne,
    /// The model takes and gives values in [-1, 1].
    MinusOneOne,
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("source").multiple(false))]
pub struct ExportArgs {
    /// Bundle folder to write (with one of --from-pretrained, --random-weights, --tiny, --identity, --image-model).
    #[arg(value_name = "OUT", required_unless_present = "write_script")]
    out: Option<PathBuf>,
    /// A diffusers pipeline already on disk or in the Hugging Face cache (e.g. stabilityai/sd-turbo); nothing is
    /// downloaded.
    #[arg(long, value_name = "DIR_OR_ID", group = "source")]
    from_pretrained: Option<String>,
    /// Full-size SD-Turbo UNet and TAESD configs with random weights: real cost, for benchmarks.
    #[arg(long, group = "source")]
    random_weights: bool,
    /// The same model classes with tiny configs and seeded random weights (test fixtures, a few MB).
    #[arg(long, group = "source")]
    tiny: bool,
    /// Hand-built exact-inverse models: strength 0 gives every frame back unchanged (tests).
    #[arg(long, group = "source")]
    identity: bool,
    /// Kind image: an RGB-to-RGB ONNX model of your own, run through the same tiling and caching.
    #[arg(long, value_name = "FILE.onnx", group = "source")]
    image_model: Option<PathBuf>,
    /// Bundle kind.
    #[arg(long, value_enum, default_value = "turbo")]
    kind: Kind,
    /// TAESD (diffusers AutoencoderTiny) folder or id.
    #[arg(long, value_name = "DIR_OR_ID")]
    vae: Option<String>,
    /// LCM-LoRA folder or id to fuse into --from-pretrained (an SD 1.5 pipeline).
    #[arg(long, value_name = "DIR_OR_ID")]
    lcm_lora: Option<String>,
    /// LCM guidance scale w, baked in when the UNet takes one (exporter default 8).
    #[arg(long, value_name = "W")]
    guidance_scale: Option<f64>,
    /// Text the prior is conditioned on, embedded once at export.
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// Model input (tile) size in pixels (default 512; --tiny 64; --identity 32).
    #[arg(long, value_name = "PIXELS")]
    size: Option<u32>,
    /// Static batch size (tiles x stream-batch steps; TensorRT prefers static shapes); 0 = dynamic.
    #[arg(long, value_name = "N")]
    batch: Option<u32>,
    /// Export float16 weights and I/O.
    #[arg(long)]
    fp16: bool,
    /// Seed of random weights.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// --image-model: the value range the model takes and gives.
    #[arg(long, value_enum, value_name = "RANGE")]
    range: Option<Range>,
    /// Python interpreter with the exporter's packages (default: $OLDFILM_PYTHON, else python3).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Write the exporter and its requirements.txt into this folder (to read, or to `pip install -r` from); alone,
    /// that is all the command does.
    #[arg(long, value_name = "DIR")]
    write_script: Option<PathBuf>,
}

impl ExportArgs {
    /// The exporter's command line for these arguments.
    fn has_source(&self) -> bool {
        self.from_pretrained.is_some()
            || self.random_weights
            || self.tiny
            || self.identity
            || self.image_model.is_some()
    }

    fn script_args(&self, out: &Path) -> Vec<String> {
        let mut a = vec![out.display().to_string()];
        let mut flag = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                a.push(format!("--{name}"));
                a.push(v);
            }
        };
        flag("from-pretrained", self.from_pretrained.clone());
        flag(
            "image-model",
            self.image_model.as_ref().map(|p| p.display().to_string()),
        );
        flag(
            "kind",
            Some(self.kind.to_possible_value().expect("named").get_name().to_string()),
        );
        flag("vae", self.vae.clone());
        flag("lcm-lora", self.lcm_lora.clone());
        flag("guidance-scale", self.guidance_scale.map(|v| v.to_string()));
        flag("prompt", self.prompt.clone());
        flag("size", self.size.map(|v| v.to_string()));
        flag("batch", self.batch.map(|v| v.to_string()));
        flag("seed", self.seed.map(|v| v.to_string()));
        let range = self.range.map(|r| match r {
            Range::ZeroOne => "zero_one".to_string(),
            Range::MinusOneOne => "minus_one_one".to_string(),
        });
        flag("range", range);
        for (set, name) in [
            (self.random_weights, "--random-weights"),
            (self.tiny, "--tiny"),
            (self.identity, "--identity"),
            (self.fp16, "--fp16"),
        ] {
            if set {
                a.push(name.to_string());
            }
        }
        a
    }

    /// The Python modules this export imports (the identity and image-model modes need no torch).
    fn modules(&self) -> &'static [&'static str] {
        if self.identity || self.image_model.is_some() {
            &["numpy", "onnx", "onnxruntime"]
        } else {
            &[
                "numpy",
                "onnx",
                "onnxruntime",
                "safetensors",
                "torch",
                "diffusers",
                "transformers",
            ]
        }
    }

    fn python(&self) -> PathBuf {
        self.python
            .clone()
            .or_else(|| std::env::var_os("OLDFILM_PYTHON").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("python3"))
    }
}

pub fn export(args: ExportArgs) -> Result<()> {
    if let Some(dir) = &args.write_script {
        write_scripts(dir)?;
        eprintln!("wrote {0}/export.py and {0}/requirements.txt", dir.display());
    }
    let Some(out) = &args.out else {
        return Ok(());
    };
    if !args.has_source() {
        bail!("say what to export: --from-pretrained DIR_OR_ID, --random-weights, --tiny, --identity or --image-model FILE.onnx");
    }
    let scripts = match &args.write_script {
        Some(dir) => dir.clone(),
        None => {
            let dir = std::env::temp_dir().join(format!("oldfilm-export-{}", std::process::id()));
            write_scripts(&dir)?;
            dir
        }
    };
    let result = run_exporter(&args, out, &scripts);
    if args.write_script.is_none() {
        let _ = std::fs::remove_dir_all(&scripts);
    }
    result?;
    let bundle = engines::Bundle::open(out).context("the exporter wrote a bundle that does not open")?;
    let m = &bundle.manifest.model;
    eprintln!(
        "wrote {}: kind {:?}, {}x{} tiles, checked",
        out.display(),
        bundle.kind(),
        m.width,
        m.height
    );
    Ok(())
}

fn write_scripts(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in [("export.py", EXPORT_PY), ("requirements.txt", REQUIREMENTS)] {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn run_exporter(args: &ExportArgs, out: &Path, scripts: &Path) -> Result<()> {
    let python = args.python();
    let missing = missing_modules(&python, args.modules())?;
    if !missing.is_empty() {
        bail!(
            "{} lacks the Python packages {} that this export needs: install the exporter's requirements with \
             `{} -m pip install -r requirements.txt` (`oldfilm export --write-script DIR` writes it; torch, diffusers \
             and transformers are several GB), or choose another interpreter with --python",
            python.display(),
            missing.join(", "),
            python.display()
        );
    }
    let status = Command::new(&python)
        .arg(scripts.join("export.py"))
        .args(args.script_args(out))
        .status()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !status.success() {
        bail!("the exporter failed ({status}); its messages are above");
    }
    Ok(())
}

/// The modules of `wanted` that `python` cannot import.
fn missing_modules(python: &Path, wanted: &[&str]) -> Result<Vec<String>> {
    let probe =
        "import importlib.util, sys\nprint(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))";
    let output = Command::new(python)
        .arg("-c")
        .arg(probe)
        .args(wanted)
        .output()
        .with_context(|| {
            format!(
                "cannot run Python '{}' (set --python or OLDFILM_PYTHON)",
                python.display()
            )
        })?;
    if !output.status.success() {
        bail!(
            "Python '{}' failed: {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ExportArgs,
    }

    fn parse(args: &[&str]) -> Result<ExportArgs, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("export").chain(args.iter().copied())).map(|w| w.args)
    }

    #[test]
    fn arguments_reach_the_exporter_as_it_names_them() {
        let args = parse(&[
            "out",
            "--from-pretrained",
            "stabilityai/sd-turbo",
            "--size",
            "512",
            "--batch",
            "2",
            "--fp16",
            "--prompt",
            "a clean frame",
        ])
        .unwrap();
        assert_eq!(
            args.script_args(Path::new("out")),
            [
                "out",
                "--from-pretrained",
                "stabilityai/sd-turbo",
                "--kind",
                "turbo",
                "--prompt",
                "a clean frame",
                "--size",
                "512",
                "--batch",
                "2",
                "--fp16"
            ]
        );
        assert!(args.modules().contains(&"torch"));
        let identity = parse(&["out", "--identity", "--kind", "image"]).unwrap();
        assert_eq!(
            identity.script_args(Path::new("out")),
            ["out", "--kind", "image", "--identity"]
        );
        assert!(!identity.modules().contains(&"torch"));
    }

    #[test]
    fn at_most_one_source_and_an_output_unless_only_writing_the_script() {
        assert!(parse(&["out", "--tiny", "--identity"]).is_err());
        assert!(parse(&["--tiny"]).is_err());
        let script_only = parse(&["--write-script", "dir"]).unwrap();
        assert!(script_only.out.is_none() && !script_only.has_source());
        let dir = std::env::temp_dir().join(format!("oldfilm-export-test-{}", std::process::id()));
        export(parse(&["--write-script", dir.to_str().unwrap()]).unwrap()).unwrap();
        let requirements = std::fs::read_to_string(dir.join("requirements.txt")).unwrap();
        assert!(requirements.contains("torch==") && dir.join("export.py").exists());
        std::fs::remove_dir_all(&dir).unwrap();
        let err = export(parse(&["out"]).unwrap()).unwrap_err();
        assert!(err.to_string().starts_with("say what to export"), "{err}");
    }

    #[test]
    fn missing_modules_are_named_and_a_missing_python_is_a_clear_error() {
        let python = Path::new("python3");
        let missing = missing_modules(python, &["json", "oldfilm_no_such_module"]).unwrap();
        assert_eq!(missing, ["oldfilm_no_such_module"]);
        let err = missing_modules(Path::new("/nonexistent/python"), &["json"]).unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot run Python '/nonexistent/python'"),
            "{err:#}"
        );
    }
}
