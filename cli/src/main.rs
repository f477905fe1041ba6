//! `vlm`: zero-shot classification, embeddings and evaluation with vlm-edge.
//!
//! The only place that knows about terminals, paths and exit codes: every failure
//! becomes one `vlm: error: …` line naming the thing at fault, and exit code 2.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use vlm_quantize::calibrate::Method;
use vlm_quantize::eval::{evaluate, EvalReport};
use vlm_quantize::int8::{ActivationBits, Options, WeightBits};
use vlm_quantize::pipeline::{quantize_model, Request};
use vlm_quantize::writer::write_file;
use vlm_quantize::{rank_labels, Artifact, Embedder, Fp32Siglip};
use vlm_runtime::ops::Precision;

mod bench;
mod bench_caption;
mod bench_ops;
mod caption;
mod device;
mod target;

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
    /// Caption images with a captioning model.
    Caption(caption::CaptionArgs),
    /// Print image and/or text embeddings.
    Embed(EmbedArgs),
    /// Evaluate a model.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Quantize a SigLIP model folder into one int8 artifact (.vlmq), with a report.
    Quantize(QuantizeArgs),
    /// Time a tower: latency, GMAC/s, and the fraction of the CPU's int8 peak it reaches.
    Bench(bench::BenchArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MethodArg {
    Minmax,
    Percentile,
    Mse,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AttentionArg {
    Bf16,
    Fp32,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum WeightBitsArg {
    #[value(name = "8")]
    Eight,
    Auto,
    #[value(name = "7")]
    Seven,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ActivationBitsArg {
    #[value(name = "8")]
    Eight,
    #[value(name = "7")]
    Seven,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KvCacheArg {
    Int8,
    F32,
}

#[derive(Args)]
struct QuantizeArgs {
    /// Model folder: SigLIP (config.json, vision.onnx, text.onnx, tokenizer.json) or a
    /// Hugging Face captioner (config.json, model.safetensors, tokenizer.json).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Calibration folder: images, and for SigLIP prompts.txt (one prompt per line) for
    /// the text tower; a captioner captions each image in fp32 and calibrates on that.
    #[arg(long, value_name = "DIR")]
    calib: PathBuf,
    /// Captioner: the text after the image while calibrating (default: the prompt the
    /// model was trained with, else none).
    #[arg(long)]
    prompt: Option<String>,
    /// Captioner: caption tokens at most per calibration image.
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_tokens: usize,
    /// Captioner: positions the KV cache holds (prompt, image tokens and caption).
    #[arg(long, value_name = "N", default_value_t = 512)]
    context: usize,
    /// How activation ranges are chosen.
    #[arg(long, value_enum, default_value = "mse")]
    method: MethodArg,
    /// Percent of values kept by --method percentile.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// SmoothQuant migration strength after each LayerNorm (0 disables).
    #[arg(long, default_value_t = 0.5)]
    smooth_alpha: f32,
    /// Accuracy budget: median fp32-vs-int8 embedding cosine per tower.
    #[arg(long, default_value_t = 0.999)]
    min_cosine: f32,
    /// Most layers kept in fp32 to meet the budget. 0 keeps every layer int8; the 7-bit
    /// widths still go back to 8 bits while the budget is missed.
    #[arg(long, default_value_t = 8)]
    max_fallback: usize,
    /// What attention's two matrix products multiply (the softmax is fp32 either way):
    /// bf16 operands with f32 sums run twice as fast on CPUs with bf16 dot products.
    #[arg(long, value_enum, default_value = "bf16")]
    attention: AttentionArg,
    /// Captioner: how the decoder keeps its keys and values. int8 (a scale per token and
    /// head) takes a quarter of f32's memory; f32 is read through --attention.
    #[arg(long, value_enum, default_value = "int8")]
    kv_cache: KvCacheArg,
    /// Weight widths of the int8 layers. 7-bit weights (−63..63) let AVX2-only CPUs
    /// multiply about 1.5× faster at some accuracy (other CPUs run both alike): 7 gives
    /// them to every layer (onnxruntime's reduce_range), auto to the layers whose own
    /// error grows by at most a quarter with them, 8 to none.
    #[arg(long, value_enum, default_value = "8")]
    weight_bits: WeightBitsArg,
    /// Activation widths of the 7-bit-weight layers. 7 quantizes their inputs to 0..127
    /// too, which AVX2-only CPUs multiply about 1.2× faster again at some accuracy; the
    /// budget sends the most sensitive layers back to 8 bits. Needs --weight-bits 7 or
    /// auto.
    #[arg(long, value_enum, default_value = "8")]
    activation_bits: ActivationBitsArg,
    /// Comma-separated labels whose text embeddings the artifact stores.
    #[arg(long, value_name = "A,B,C")]
    labels: Option<String>,
    /// File with one label per line, stored like --labels.
    #[arg(long, value_name = "FILE")]
    labels_file: Option<PathBuf>,
    /// Prompt template for stored labels; {} is replaced by each label.
    #[arg(long, default_value = "{}")]
    template: String,
    /// Evaluation folder, fp32 vs int8 in the report: zero-shot accuracy (eval.json) for
    /// SigLIP, caption scores (captions.json) for a captioner.
    #[arg(long, value_name = "DIR")]
    eval: Option<PathBuf>,
    /// The artifact to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Also write an HTML report (and its JSON beside it, same name, .json).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// A microcontroller to build for (cortex-m7, cortex-m55): stores the image tower and
    /// the labels only, and fails unless model and firmware fit the part's flash and RAM.
    #[arg(long, value_name = "PART")]
    target: Option<String>,
}

#[derive(Args)]
struct ModelArg {
    /// Model: a folder (config.json, vision.onnx, text.onnx, tokenizer.json, run in fp32)
    /// or an int8 artifact (.vlmq, run on the vlm runtime).
    /// Default: $VLM_MODEL, else the demo artifact built into vlm.
    #[arg(long, value_name = "DIR|FILE")]
    model: Option<PathBuf>,
    /// Threads for an int8 artifact's large matrix multiplies (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    #[command(flatten)]
    device: device::DeviceArg,
}

/// A loaded model of either kind.
enum Loaded {
    Fp32(Fp32Siglip),
    Int8(Artifact),
}

impl Loaded {
    fn embedder(&self) -> &dyn Embedder {
        match self {
            Loaded::Fp32(m) => m,
            Loaded::Int8(a) => a,
        }
    }
}

impl ModelArg {
    fn load(&self) -> Result<Loaded> {
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let path = match (&self.model, std::env::var_os("VLM_MODEL")) {
            (Some(p), _) => p.clone(),
            (None, Some(env)) => PathBuf::from(env),
            (None, None) => {
                let a = vlm_host::demo::model().context("loading the built-in demo model")?;
                a.set_threads(threads);
                self.device.attach(&a).context("the built-in demo model")?;
                return Ok(Loaded::Int8(a));
            }
        };
        let ctx = || format!("loading model {}", path.display());
        if path.is_file() {
            let a = Artifact::load(&path).with_context(ctx)?;
            a.check_host_usable().with_context(ctx)?;
            a.set_threads(threads);
            self.device.attach(&a).with_context(ctx)?;
            Ok(Loaded::Int8(a))
        } else {
            self.device.folder(&path)?;
            Ok(Loaded::Fp32(Fp32Siglip::load(&path).with_context(ctx)?))
        }
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
    /// Show only labels whose probability is at least P (0 to 1). Each label's
    /// probability is independent (SigLIP's sigmoid), so several, or none, may pass:
    /// what a multi-label filter such as moderation decides on.
    #[arg(long, value_name = "P", value_parser = probability, allow_negative_numbers = true)]
    threshold: Option<f32>,
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
    /// Caption quality on a caption set: BLEU, CIDEr-D, and colour / shape / count named
    /// right per object.
    Caption(caption::EvalCaptionArgs),
    /// How closely an int8 artifact reproduces its fp32 model: embedding cosines.
    Fidelity {
        /// The int8 artifact (.vlmq).
        #[arg(long, value_name = "FILE")]
        model: PathBuf,
        /// The fp32 model folder it was quantized from.
        #[arg(long, value_name = "DIR")]
        reference: PathBuf,
        /// Folder of images (and optionally prompts.txt) to compare on.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Print JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
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
        /// Also print each task's reliability diagram (probability bins against how
        /// often the labels in them are right).
        #[arg(long)]
        bins: bool,
    },
}

/// Labels from a comma-separated list and/or a file of one label per line (blank lines
/// and `#` comments skipped), in that order.
fn collect_labels(list: Option<&str>, file: Option<&Path>) -> Result<Vec<String>> {
    let mut labels: Vec<String> = Vec::new();
    if let Some(list) = list {
        labels.extend(
            list.split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from),
        );
    }
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("{}: cannot read labels file", file.display()))?;
        labels.extend(vlm_quantize::pipeline::text_lines(&text));
    }
    Ok(labels)
}

fn read_labels(args: &ClassifyArgs) -> Result<Vec<String>> {
    let labels = collect_labels(args.labels.as_deref(), args.labels_file.as_deref())?;
    if labels.is_empty() {
        bail!("no labels given: pass --labels \"a,b,c\" or --labels-file FILE with at least one label");
    }
    Ok(labels)
}

/// A probability for `--threshold`: a number from 0 to 1.
fn probability(s: &str) -> std::result::Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability from 0 to 1")),
    }
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
    let stored_ok = args.labels.is_none() && args.labels_file.is_none();
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
    let loaded = args.model.load()?;
    let model = loaded.embedder();
    // An artifact quantized with --labels classifies with its stored label embeddings
    // (no text tower run) when no labels are given here.
    let stored = match &loaded {
        Loaded::Int8(a) if stored_ok => a.runtime().labels().map(|l| {
            let names: Vec<String> = (0..l.count).map(|i| l.name(i).to_string()).collect();
            let embs: Vec<Vec<f32>> = (0..l.count).map(|i| l.embedding(i).to_vec()).collect();
            (names, embs)
        }),
        _ => None,
    };
    let (labels, label_embeddings) = match stored {
        Some(s) => s,
        None => {
            let labels = read_labels(&args)?;
            let embs = labels
                .iter()
                .map(|l| model.embed_text(&prompt(&args.template, l)))
                .collect::<Result<Vec<_>, _>>()?;
            (labels, embs)
        }
    };
    let scorer = model.scorer();
    // All images are scored before anything is printed: a bad image leaves no partial output.
    let mut results = Vec::new();
    for image in &args.images {
        let emb = model.embed_image(image)?;
        let mut ranked = rank_labels(&scorer, &emb, &labels, &label_embeddings)?;
        if let Some(p) = args.threshold {
            ranked.retain(|l| l.probability >= p);
        }
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
    let loaded = args.model.load()?;
    let model = loaded.embedder();
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

fn print_report(report: &EvalReport, bins: bool) {
    // The probability columns: medians over items of the right label's σ(t·cos + b)
    // and of the best wrong label's, and how often 0.5 keeps exactly the right label.
    println!(
        "{:<30} {:>8} {:>7} {:>8} {:>8} {:>8}",
        "task", "top-1 %", "items", "p(right)", "p(wrong)", "@0.5 %"
    );
    for t in &report.tasks {
        let c = &t.calibration;
        println!(
            "{:<30} {:>8.2} {:>7} {:>8.3} {:>8.3} {:>8.2}",
            t.name, t.accuracy, t.total, c.median_true, c.median_best_wrong, c.threshold_exact
        );
    }
    if bins {
        for t in &report.tasks {
            println!();
            println!("reliability: {} (every image against every label)", t.name);
            println!(
                "{:<14} {:>8} {:>10} {:>10}",
                "probability", "labels", "mean p", "right"
            );
            for b in &t.calibration.bins {
                println!(
                    "{:<14} {:>8} {:>10.3} {:>10.3}",
                    format!("{:.1}-{:.1}", b.lower, b.upper),
                    b.count,
                    b.mean_probability,
                    b.observed
                );
            }
        }
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

fn fidelity(model: PathBuf, reference: PathBuf, data: PathBuf, json: bool) -> Result<()> {
    if !data.is_dir() {
        bail!("{}: no such data folder", data.display());
    }
    let artifact =
        Artifact::load(&model).with_context(|| format!("loading {}", model.display()))?;
    let fp32 = Fp32Siglip::load(&reference)
        .with_context(|| format!("loading reference model {}", reference.display()))?;
    let images = vlm_quantize::pipeline::image_files(&data)?;
    if images.is_empty() {
        bail!("{}: no images in the data folder", data.display());
    }
    let prompts_file = data.join(vlm_quantize::pipeline::PROMPTS_FILE);
    let prompts: Vec<String> = if prompts_file.is_file() {
        vlm_quantize::pipeline::read_prompts(&prompts_file)?
    } else {
        Vec::new()
    };
    let bar = progress_bar(!json);
    let f =
        vlm_quantize::pipeline::fidelity(&artifact, &fp32, &images, &prompts, &mut |s, d, t| {
            bar.set_length(t as u64);
            bar.set_position(d as u64);
            bar.set_message(s.to_string());
        })?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&f)?);
    } else {
        println!(
            "{:<8} {:>6} {:>10} {:>10} {:>10}",
            "tower", "inputs", "median", "min", "mean"
        );
        for (name, c) in [("vision", Some(&f.images)), ("text", f.texts.as_ref())] {
            match c {
                Some(c) => println!(
                    "{:<8} {:>6} {:>10.6} {:>10.6} {:>10.6}",
                    name, c.count, c.median, c.min, c.mean
                ),
                None => println!("{name:<8} {:>6} {:>10}", 0, "-"),
            }
        }
        println!("text inputs: {}", f.text_inputs);
    }
    Ok(())
}

fn eval(cmd: EvalCommand) -> Result<()> {
    let (model, data, json, bins) = match cmd {
        EvalCommand::ZeroShot {
            model,
            data,
            json,
            bins,
        } => (model, data, json, bins),
        EvalCommand::Fidelity {
            model,
            reference,
            data,
            json,
        } => return fidelity(model, reference, data, json),
        EvalCommand::Caption(a) => return caption::eval_caption(a),
    };
    if !data.is_dir() {
        bail!("{}: no such data folder", data.display());
    }
    let loaded = model.load()?;
    let interactive = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = evaluate(loaded.embedder(), &data, |done, total| {
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
        print_report(&report, bins);
    }
    Ok(())
}

fn quantize(args: QuantizeArgs) -> Result<()> {
    if !args.template.contains("{}") {
        bail!(
            "--template {:?} has no {{}} where the label goes",
            args.template
        );
    }
    if !(0.0..=1.0).contains(&args.smooth_alpha) {
        bail!("--smooth-alpha {} is outside 0..=1", args.smooth_alpha);
    }
    if !(50.0..=100.0).contains(&args.percentile) {
        bail!("--percentile {} is outside 50..=100", args.percentile);
    }
    if !(args.min_cosine > -1.0 && args.min_cosine <= 1.0) {
        bail!("--min-cosine {} is outside (-1, 1]", args.min_cosine);
    }
    if !args.model.is_dir() {
        bail!("{}: no such model folder", args.model.display());
    }
    if !args.calib.is_dir() {
        bail!("{}: no such calibration folder", args.calib.display());
    }
    if let Some(dir) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !dir.is_dir() {
            bail!("{}: the output folder does not exist", dir.display());
        }
    }
    let options = Options {
        method: match args.method {
            MethodArg::Minmax => Method::MinMax,
            MethodArg::Percentile => Method::Percentile(args.percentile / 100.0),
            MethodArg::Mse => Method::Mse,
        },
        smooth_alpha: (args.smooth_alpha > 0.0).then_some(args.smooth_alpha),
        min_cosine: args.min_cosine,
        max_fallback: args.max_fallback,
        attention: match args.attention {
            AttentionArg::Bf16 => Precision::Bf16,
            AttentionArg::Fp32 => Precision::F32,
        },
        weight_bits: match args.weight_bits {
            WeightBitsArg::Eight => WeightBits::Eight,
            WeightBitsArg::Auto => WeightBits::Auto,
            WeightBitsArg::Seven => WeightBits::Seven,
        },
        activation_bits: match args.activation_bits {
            ActivationBitsArg::Eight => ActivationBits::Eight,
            ActivationBitsArg::Seven => ActivationBits::Seven,
        },
    };
    if options.activation_bits != ActivationBits::Eight && options.weight_bits == WeightBits::Eight
    {
        bail!(
            "--activation-bits 7 applies to layers with 7-bit weights: add --weight-bits 7 or auto"
        );
    }
    if vlm_quantize::hf::is_hf_folder(&args.model) {
        return quantize_captioner(args, options);
    }
    if args.prompt.is_some() {
        bail!("--prompt is for a captioner; {} is a SigLIP folder (its calibration prompts go in prompts.txt)", args.model.display());
    }
    let labels = collect_labels(args.labels.as_deref(), args.labels_file.as_deref())?;
    let labels: Vec<String> = labels.iter().map(|l| prompt(&args.template, l)).collect();
    let part = args.target.as_deref().map(target::part).transpose()?;
    if let Some(p) = &part {
        if matches!(args.attention, AttentionArg::Fp32) {
            eprintln!(
                "note: --attention fp32 on {}: its scalar attention sums in another order than this host's SIMD kernels, so its last bits will differ from the host's (bf16, the default, gives the same bits everywhere)",
                p.name
            );
        }
        if labels.is_empty() {
            bail!(
                "--target {} stores the labels' embeddings in flash (the device runs no text tower): pass --labels or --labels-file",
                p.name
            );
        }
    }
    let request = Request {
        model_dir: args.model.clone(),
        calib_dir: args.calib.clone(),
        options,
        labels,
        prompts: Vec::new(),
        eval_data: args.eval.clone(),
        image_only: args.target.is_some(),
    };
    let (bytes, report) = with_progress(&args, |p| quantize_model(&request, p))?;
    if let Some(p) = &part {
        let model = vlm_runtime::Model::from_bytes(bytes.as_bytes())
            .context("reading back the new artifact")?;
        let arena = model.arena_size() as u64;
        let fit = p.check(bytes.len() as u64, arena)?;
        eprintln!(
            "{} ({}): flash {} of {} KiB (artifact {} KiB), RAM {} of {} KiB (arena {} KiB)",
            p.name,
            p.part,
            fit.flash_bytes.div_ceil(1024),
            p.flash_kib,
            (bytes.len() as u64).div_ceil(1024),
            fit.ram_bytes.div_ceil(1024),
            p.ram_kib,
            arena.div_ceil(1024)
        );
    }
    finish_quantize(
        &args,
        &bytes,
        &report,
        vlm_quantize::report::render_html(&report),
        vlm_quantize::report::render_text(&report),
    )
}

/// `vlm quantize` on a Hugging Face captioner folder.
fn quantize_captioner(args: QuantizeArgs, options: Options) -> Result<()> {
    if let Some(t) = &args.target {
        bail!(
            "--target {t} is for a SigLIP classifier; {} is a captioner, which no microcontroller target holds",
            args.model.display()
        );
    }
    if args.labels.is_some() || args.labels_file.is_some() {
        bail!(
            "--labels and --labels-file are for a SigLIP model; {} is a captioner",
            args.model.display()
        );
    }
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let request = vlm_quantize::caption_pipeline::CaptionRequest {
        model_dir: args.model.clone(),
        calib_dir: args.calib.clone(),
        options,
        prompt: args.prompt.clone(),
        max_tokens: args.max_tokens,
        layout: vlm_quantize::hf::Layout {
            context: args.context,
            ..vlm_quantize::hf::Layout::default()
        },
        eval_data: args.eval.clone(),
        kv_cache: match args.kv_cache {
            KvCacheArg::Int8 => vlm_quantize::kv_cache::KvCache::Int8,
            KvCacheArg::F32 => vlm_quantize::kv_cache::KvCache::F32,
        },
    };
    let (bytes, report) = with_progress(&args, |p| {
        vlm_quantize::caption_pipeline::quantize_captioner(&request, p)
    })?;
    finish_quantize(
        &args,
        &bytes,
        &report,
        vlm_quantize::report::render_caption_html(&report),
        vlm_quantize::report::render_caption_text(&report),
    )
}

/// Runs a quantization with a progress bar (hidden for --json and off a terminal).
fn with_progress<T>(
    args: &QuantizeArgs,
    f: impl FnOnce(&mut dyn FnMut(&str, usize, usize)) -> vlm_quantize::Result<T>,
) -> Result<T> {
    let bar = progress_bar(!args.json);
    let out = f(&mut |stage, done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(stage.to_string());
    })
    .with_context(|| format!("quantizing {}", args.model.display()))?;
    bar.finish_and_clear();
    Ok(out)
}

/// Writes the reports, then the artifact (a failure leaves no artifact behind), and
/// prints the report.
fn finish_quantize(
    args: &QuantizeArgs,
    bytes: &vlm_quantize::writer::AlignedBytes,
    report: &impl serde::Serialize,
    html: String,
    text: String,
) -> Result<()> {
    if let Some(path) = &args.report {
        let json_path = path.with_extension("json");
        write_file(&json_path, serde_json::to_string_pretty(report)?.as_bytes())?;
        write_file(path, html.as_bytes())?;
    }
    write_file(&args.out, bytes.as_bytes())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{text}");
        println!("wrote {} ({} bytes)", args.out.display(), bytes.len());
    }
    Ok(())
}

/// A progress bar on stderr when it is a terminal; hidden otherwise (CI logs, pipes).
fn progress_bar(enabled: bool) -> indicatif::ProgressBar {
    if !enabled || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:40} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn run(cli: Cli) -> Result<()> {
    // For the tests of `main`'s last resort: a panic, with or without the panic hook.
    match std::env::var("VLM_DEBUG_PANIC").as_deref() {
        Ok("resume") => std::panic::resume_unwind(Box::new("a resumed test panic".to_string())),
        Ok(_) => panic!("a test panic (VLM_DEBUG_PANIC is set)"),
        Err(_) => {}
    }
    match cli.command {
        Command::Classify(a) => classify(a),
        Command::Caption(a) => caption::caption(a),
        Command::Embed(a) => embed(a),
        Command::Eval(e) => eval(e),
        Command::Quantize(q) => quantize(q),
        Command::Bench(b) => bench::bench(b),
    }
}

/// The last panic's message and place, kept by the panic hook for `main` to print as
/// one error line (the default hook's several lines would not be one).
static PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut last) = PANIC.lock() {
            *last = Some(format!("{msg}{at}"));
        }
    }));
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let mut cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // `vlm bench --caption` times 1 and 2 threads unless --threads says otherwise.
    if let (Command::Bench(b), Some(m)) = (&mut cli.command, matches.subcommand_matches("bench")) {
        b.threads_given = m.value_source("threads") == Some(clap::parser::ValueSource::CommandLine);
    }
    // A panic is a bug, but it still ends as one error line and exit 2, never as a
    // silent exit: a panic resumed without the hook (as a C library's error unwinding
    // through Rust is) carries its message as the payload.
    let result = std::panic::catch_unwind(|| run(cli)).unwrap_or_else(|payload| {
        let hooked = PANIC.lock().ok().and_then(|mut p| p.take());
        let msg = hooked
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(no message)".into());
        Err(anyhow::anyhow!(
            "internal error (a bug in vlm; please report it): {msg}"
        ))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain joined, outermost first.
            let msg: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("vlm: error: {}", msg.join(": ").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
