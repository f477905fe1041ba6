//! `vlm caption`: captions from a captioner — a Hugging Face model folder (read from its
//! safetensors, run in fp32) or an artifact.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use vlm_host::caption::Captioner;
use vlm_models::generate::Options;
use vlm_quantize::hf;

#[derive(Args)]
pub struct CaptionModelArg {
    /// Captioner: a Hugging Face model folder (Idefics3 / SmolVLM, LLaVA, PaliGemma or
    /// Idefics2, as save_pretrained writes it; run in fp32) or an artifact (.vlmq).
    /// Default: the demo captioner, models/demo-captioner.
    #[arg(long, value_name = "DIR|FILE")]
    pub model: Option<PathBuf>,
    /// Positions the KV cache holds (prompt, image tokens and caption), for a folder.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub context: usize,
    /// Threads for the large matrix products (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub device: crate::device::DeviceArg,
}

impl CaptionModelArg {
    pub fn load(&self) -> Result<Captioner> {
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/demo-captioner");
        let path = match &self.model {
            Some(p) => p.clone(),
            None if demo.is_dir() => demo,
            None => bail!(
                "no --model given, and the demo captioner (models/demo-captioner in the source tree this vlm was built from) is not there: pass --model DIR|FILE"
            ),
        };
        let path = &path;
        let ctx = || format!("loading captioner {}", path.display());
        let model = if path.is_file() {
            vlm_host::Model::load(path).with_context(ctx)?
        } else if path.is_dir() {
            load_folder(path, self.context).with_context(ctx)?
        } else {
            bail!("{}: no such model file or folder", path.display());
        };
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        model.set_threads(threads);
        self.device.attach(&model).with_context(ctx)?;
        Captioner::from_model(model).with_context(ctx)
    }
}

fn load_folder(dir: &Path, context: usize) -> Result<vlm_host::Model> {
    let layout = hf::Layout {
        context,
        ..hf::Layout::default()
    };
    let cap = hf::load(dir, layout)?;
    let bytes = cap.write()?;
    Ok(vlm_host::Model::from_aligned(bytes, dir)?)
}

#[derive(Args)]
pub struct CaptionArgs {
    /// Images to caption.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    #[command(flatten)]
    model: CaptionModelArg,
    /// Text after the image, in the family's prompt layout (a chat model wants its
    /// chat template here). Default: the prompt the model was trained with, if its
    /// folder names one, else none.
    #[arg(long)]
    prompt: Option<String>,
    /// New tokens at most.
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_tokens: usize,
    /// Beam search with N beams (1: greedy).
    #[arg(long, value_name = "N", default_value_t = 1)]
    beam: usize,
    /// Hugging Face's repetition penalty (1: none).
    #[arg(long, value_name = "P", default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Print each caption's text as its tokens come.
    #[arg(long)]
    stream: bool,
    /// Print JSON instead of text.
    #[arg(long, conflicts_with = "stream")]
    json: bool,
}

#[derive(serde::Serialize)]
struct CaptionResult {
    image: PathBuf,
    caption: String,
    tokens: Vec<u32>,
}

pub fn caption(args: CaptionArgs) -> Result<()> {
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    if !(args.repetition_penalty.is_finite() && args.repetition_penalty > 0.0) {
        bail!("--repetition-penalty must be a positive number");
    }
    let max_beams = vlm_models::generate::MAX_BEAMS;
    if args.beam == 0 || args.beam > max_beams {
        bail!("--beam must be from 1 to {max_beams}");
    }
    if args.beam > 1 && (args.stream || args.repetition_penalty != 1.0) {
        bail!("--beam chooses whole captions: it takes neither --stream nor --repetition-penalty");
    }
    for image in &args.images {
        if !image.is_file() {
            bail!("{}: no such image file", image.display());
        }
    }
    let cap = args.model.load()?;
    let prompt = cap.prompt_or_default(args.prompt.as_deref());
    let opts = Options {
        max_tokens: args.max_tokens,
        repetition_penalty: args.repetition_penalty,
    };
    let mut results = Vec::new();
    let multi = args.images.len() > 1;
    for image in &args.images {
        let pixels = cap.pixels(image)?;
        let mut so_far: Vec<u32> = Vec::new();
        let mut printed = 0;
        if args.stream && multi {
            print!("{}: ", image.display());
        }
        if args.beam > 1 {
            let c = cap.caption_beam(&pixels, &prompt, &opts, args.beam)?;
            results.push(CaptionResult {
                image: image.clone(),
                caption: c.text.trim().to_string(),
                tokens: c.tokens,
            });
            continue;
        }
        let c = cap.caption(&pixels, &prompt, &opts, |id| {
            if args.stream {
                // Whole-text decoding each time: a token may be half a character.
                so_far.push(id);
                if let Ok(text) = cap.decode(&so_far) {
                    if text.len() > printed && text.is_char_boundary(printed) {
                        print!("{}", &text[printed..]);
                        let _ = std::io::stdout().flush();
                        printed = text.len();
                    }
                }
            }
            true
        })?;
        if args.stream {
            println!();
        }
        results.push(CaptionResult {
            image: image.clone(),
            caption: c.text.trim().to_string(),
            tokens: c.tokens,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else if !args.stream {
        for r in &results {
            if multi {
                println!("{}: {}", r.image.display(), r.caption);
            } else {
                println!("{}", r.caption);
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct EvalCaptionArgs {
    #[command(flatten)]
    model: CaptionModelArg,
    /// Caption set folder (captions.json and its images).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Text after the image (default: the model's own, else none).
    #[arg(long)]
    prompt: Option<String>,
    /// New tokens at most per caption.
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_tokens: usize,
    /// Print JSON (the report and every caption) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct EvalCaptionJson<'a> {
    #[serde(flatten)]
    report: &'a vlm_host::caption_eval::CaptionReport,
    captions: Vec<(&'a str, &'a str)>,
}

/// `vlm eval caption`: BLEU-1..4 and CIDEr-D as pycocoevalcap computes them, and per
/// group (seen and held-out colour–shape pairs, counts) how often every object's colour
/// and shape, and the count, are named right.
pub fn eval_caption(args: EvalCaptionArgs) -> Result<()> {
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let set = vlm_host::caption_eval::CaptionSet::load(&args.data)?;
    let cap = args.model.load()?;
    let prompt = cap.prompt_or_default(args.prompt.as_deref());
    let opts = Options {
        max_tokens: args.max_tokens,
        repetition_penalty: 1.0,
    };
    let interactive = !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let captions: Vec<String> =
        vlm_host::caption_eval::caption_all(&set, &cap, &prompt, &opts, |done, total| {
            if interactive && (done % 20 == 0 || done == total) {
                eprint!("\r{done}/{total} images");
            }
        })?
        .into_iter()
        .map(|c| c.text.trim().to_string())
        .collect();
    if interactive {
        eprintln!();
    }
    let report = vlm_host::caption_eval::report(&set, &captions);
    if args.json {
        let out = EvalCaptionJson {
            report: &report,
            captions: set
                .items
                .iter()
                .zip(&captions)
                .map(|(it, c)| (it.image.as_str(), c.as_str()))
                .collect(),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} images: BLEU-1..4 {:.3} {:.3} {:.3} {:.3}, CIDEr-D {:.3}",
        report.images,
        report.bleu[0],
        report.bleu[1],
        report.bleu[2],
        report.bleu[3],
        report.cider_d
    );
    println!(
        "{:<28} {:>7} {:>15} {:>12}",
        "group", "images", "objects named", "count right"
    );
    for g in &report.groups {
        println!(
            "{:<28} {:>7} {:>14.1}% {:>11.1}%",
            g.name, g.images, g.objects_named, g.count_right
        );
    }
    Ok(())
}
