//! `vlm`: zero-shot classification, embeddings and evaluation with vlm-edge.
//!
//! The only place that knows about terminals, paths and exit codes: every failure
//! becomes one `vlm: error: …` line naming the thing at fault, and exit code 2.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use vlm_quantize::eval::{evaluate, EvalReport};
use vlm_quantize::{rank_labels, Fp32Siglip};

/// Where the shipped demo model lives when neither --model nor VLM_MODEL says otherwise.
const DEMO_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/demo");

#[derive(Parser)]
#[command(name = "vlm", version, about = "Vision-language models on the edge")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Zero-shot classification: one independent probability per label, ranked.
    Classify(ClassifyArgs),
    /// Print image and/or text embeddings.
    Embed(EmbedArgs),
    /// Evaluate a model.
    #[command(subcommand)]
    Eval(EvalCommand),
}

#[derive(Args)]
struct ModelArg {
    /// Model folder (config.json, vision.onnx, text.onnx, tokenizer.json).
    /// Default: $VLM_MODEL, else the shipped demo model.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
}

impl ModelArg {
    fn load(&self) -> Result<Fp32Siglip> {
        let dir = match (&self.model, std::env::var_os("VLM_MODEL")) {
            (Some(dir), _) => dir.clone(),
            (None, Some(env)) => PathBuf::from(env),
            (None, None) => PathBuf::from(DEMO_MODEL),
        };
        Fp32Siglip::load(&dir).with_context(|| format!("loading model {}", dir.display()))
    }
}

#[derive(Args)]
struct ClassifyArgs {
    /// Images to classify.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// Comma-separated labels.
    #[arg(long, value_name = "A,B,C")]
    labels: Option<String>,
    /// File with one label per line (blank lines and lines starting with # skipped).
    #[arg(long, value_name = "FILE")]
    labels_file: Option<PathBuf>,
    /// Prompt template; {} is replaced by each label.
    #[arg(long, default_value = "{}")]
    template: String,
    /// Show only the K most probable labels.
    #[arg(long, value_name = "K")]
    top: Option<usize>,
    #[command(flatten)]
    model: ModelArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EmbedArgs {
    /// Image files to embed.
    #[arg(long = "image", value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// Texts to embed.
    #[arg(long = "text", value_name = "TEXT")]
    texts: Vec<String>,
    /// Scale each embedding to unit length.
    #[arg(long)]
    normalize: bool,
    #[command(flatten)]
    model: ModelArg,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Zero-shot accuracy and retrieval recall on a data folder with eval.json.
    ZeroShot {
        #[command(flatten)]
        model: ModelArg,
        /// Data folder holding eval.json and its images.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn read_labels(args: &ClassifyArgs) -> Result<Vec<String>> {
    let mut labels: Vec<String> = Vec::new();
    if let Some(list) = &args.labels {
        labels.extend(
            list.split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from),
        );
    }
    if let Some(file) = &args.labels_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("{}: cannot read labels file", file.display()))?;
        labels.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    if labels.is_empty() {
        bail!("no labels given: pass --labels \"a,b,c\" or --labels-file FILE with at least one label");
    }
    Ok(labels)
}

fn prompt(template: &str, label: &str) -> String {
    template.replace("{}", label)
}

#[derive(serde::Serialize)]
struct ImageResult {
    image: PathBuf,
    labels: Vec<vlm_quantize::RankedLabel>,
}

fn classify(args: ClassifyArgs) -> Result<()> {
    let labels = read_labels(&args)?;
    if !args.template.contains("{}") {
        bail!(
            "--template {:?} has no {{}} where the label goes",
            args.template
        );
    }
    // Every image is checked before the model loads, so a typo fails fast.
    for image in &args.images {
        if !image.is_file() {
            bail!("{}: no such image file", image.display());
        }
    }
    let model = args.model.load()?;
    let label_embeddings = labels
        .iter()
        .map(|l| model.embed_text(&prompt(&args.template, l)))
        .collect::<Result<Vec<_>, _>>()?;
    let scorer = model.scorer();
    // All images are scored before anything is printed: a bad image leaves no partial output.
    let mut results = Vec::new();
    for image in &args.images {
        let emb = model.embed_image(image)?;
        let mut ranked = rank_labels(&scorer, &emb, &labels, &label_embeddings)?;
        if let Some(k) = args.top {
            ranked.truncate(k);
        }
        results.push(ImageResult {
            image: image.clone(),
            labels: ranked,
        });
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &results)?;
        writeln!(out)?;
    } else {
        for r in &results {
            writeln!(out, "{}", r.image.display())?;
            for l in &r.labels {
                writeln!(out, "  {:>7.4}  {}", l.probability, l.label)?;
            }
        }
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct Embedding {
    kind: &'static str,
    input: String,
    embedding: Vec<f32>,
}

fn embed(args: EmbedArgs) -> Result<()> {
    if args.images.is_empty() && args.texts.is_empty() {
        bail!("nothing to embed: pass --image FILE and/or --text TEXT");
    }
    let model = args.model.load()?;
    let mut all = Vec::new();
    for image in &args.images {
        all.push(Embedding {
            kind: "image",
            input: image.display().to_string(),
            embedding: model.embed_image(image)?,
        });
    }
    for text in &args.texts {
        all.push(Embedding {
            kind: "text",
            input: text.clone(),
            embedding: model.embed_text(text)?,
        });
    }
    if args.normalize {
        for e in &mut all {
            vlm_runtime::score::l2_normalize(&mut e.embedding);
        }
    }
    let mut out = std::io::stdout().lock();
    for e in &all {
        serde_json::to_writer(&mut out, e)?;
        writeln!(out)?;
    }
    Ok(())
}

fn print_report(report: &EvalReport) {
    println!("{:<30} {:>8} {:>7}", "task", "top-1 %", "items");
    for t in &report.tasks {
        println!("{:<30} {:>8.2} {:>7}", t.name, t.accuracy, t.total);
    }
    for r in &report.retrieval {
        println!();
        println!(
            "retrieval: {} ({} images, {} distinct captions)",
            r.name, r.images, r.captions
        );
        println!("{:<30} {:>8} {:>8} {:>8}", "", "R@1", "R@5", "R@10");
        for (name, v) in [
            ("image->text", r.image_to_text),
            ("text->image", r.text_to_image),
        ] {
            println!("{:<30} {:>8.2} {:>8.2} {:>8.2}", name, v[0], v[1], v[2]);
        }
    }
}

fn eval(cmd: EvalCommand) -> Result<()> {
    let EvalCommand::ZeroShot { model, data, json } = cmd;
    if !data.is_dir() {
        bail!("{}: no such data folder", data.display());
    }
    let model = model.load()?;
    let interactive = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = evaluate(&model, &data, |done, total| {
        if interactive && (done % 50 == 0 || done == total) {
            eprint!("\r{done}/{total} items");
            if done == total {
                eprintln!();
            }
        }
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Classify(a) => classify(a),
        Command::Embed(a) => embed(a),
        Command::Eval(e) => eval(e),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain joined, outermost first.
            let msg: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("vlm: error: {}", msg.join(": "));
            ExitCode::from(2)
        }
    }
}
