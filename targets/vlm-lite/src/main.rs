//! `vlm-lite MODEL.vlmq IMAGE.ppm [--top K] [--embedding] [--max-tokens N] [--tokens]`:
//! the runtime alone on a device (no text tower, tokenizer or ONNX here).
//!
//! - A classifier artifact: zero-shot classification against the labels stored at
//!   quantize time. `--embedding` prints the raw image embedding instead, to compare one
//!   artifact's output across machines and ISAs.
//! - A captioner artifact: a greedy caption after the prompt stored at quantize time,
//!   printed through the stored token table (`--tokens`: the token ids and a hash of the
//!   last logits' bits instead, to compare across machines and ISAs).
//!
//! Every failure is one `vlm-lite: error: ...` line and exit status 2, never a panic: a
//! board's supervisor reads the status, and a backtrace helps no one there.

mod ppm;
mod resize;

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use vlm_models::captioner::{first_resize, Meta as CaptionMeta};
use vlm_models::generate::{greedy, GenerateError, Generator, Options};
use vlm_models::siglip::{Meta, Resample};
use vlm_runtime::kernels::Isa;
use vlm_runtime::names::family;
use vlm_runtime::preprocess::Normalize;
use vlm_runtime::{rank_into, score_into, Cpu, Model, Role, Session};

const USAGE: &str =
    "usage: vlm-lite MODEL.vlmq IMAGE.ppm [--top K] [--embedding] [--max-tokens N] [--tokens]";

#[derive(Debug, PartialEq)]
struct Args {
    model: PathBuf,
    image: PathBuf,
    top: Option<usize>,
    embedding: bool,
    /// Caption tokens at most (captioners).
    max_tokens: Option<usize>,
    /// Print a caption's token ids rather than its text.
    tokens: bool,
}

enum Command {
    Run(Args),
    Help,
}

/// The number after `flag`, which must be positive.
fn positive(args: &mut impl Iterator<Item = OsString>, flag: &str) -> Result<usize, String> {
    let k = args.next().ok_or(format!("{flag} needs a number"))?;
    k.to_str()
        .and_then(|k| k.parse::<usize>().ok())
        .filter(|&k| k > 0)
        .ok_or_else(|| format!("{flag} {}: not a positive number", k.to_string_lossy()))
}

fn parse_args(mut args: impl Iterator<Item = OsString>) -> Result<Command, String> {
    let mut paths = Vec::new();
    let mut top = None;
    let mut embedding = false;
    let mut max_tokens = None;
    let mut tokens = false;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(Command::Help),
            Some("--embedding") => embedding = true,
            Some("--tokens") => tokens = true,
            Some("--top") => top = Some(positive(&mut args, "--top")?),
            Some("--max-tokens") => max_tokens = Some(positive(&mut args, "--max-tokens")?),
            Some(s) if s.starts_with('-') && s.len() > 1 => {
                return Err(format!("unknown option {s} ({USAGE})"));
            }
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    match <[PathBuf; 2]>::try_from(paths) {
        Ok([model, image]) => Ok(Command::Run(Args {
            model,
            image,
            top,
            embedding,
            max_tokens,
            tokens,
        })),
        Err(_) => Err(format!("expected a model and an image ({USAGE})")),
    }
}

/// The whole file, starting on a 4-byte boundary as `Model::from_bytes` requires: the
/// buffer is over-allocated by 3 bytes and the file read at its first aligned byte, which
/// needs neither `unsafe` nor a casting crate. Returns the buffer and where the file starts.
fn read_aligned(path: &Path) -> io::Result<(Vec<u8>, usize)> {
    let mut file = File::open(path)?;
    let len = usize::try_from(file.metadata()?.len())
        .map_err(|_| io::Error::other("too large for this machine's memory"))?;
    let mut buf = vec![0u8; len + 3];
    let start = buf.as_ptr().align_offset(4).min(3);
    file.read_exact(&mut buf[start..start + len])?;
    buf.truncate(start + len);
    Ok((buf, start))
}

fn run(args: &Args) -> Result<(), String> {
    let mpath = args.model.display();

    let (buf, start) = read_aligned(&args.model).map_err(|e| format!("{mpath}: {e}"))?;
    let model = Model::from_bytes(&buf[start..])
        .map_err(|e| format!("{mpath}: not a valid .vlmq artifact: {e}"))?;
    if model.meta.family == family::CAPTIONER {
        return caption(args, &model);
    }
    if args.max_tokens.is_some() || args.tokens {
        return Err(format!(
            "{mpath}: --max-tokens and --tokens are for captioners; this artifact is a classifier"
        ));
    }
    if model.graph(Role::ImageEncoder).is_none() {
        return Err(format!("{mpath}: the artifact has no image encoder"));
    }
    let meta = Meta::from_model(&model).map_err(|e| format!("{mpath}: {e}"))?;
    if meta.channels != 3 {
        return Err(format!(
            "{mpath}: the vision tower takes {} channels; vlm-lite feeds RGB (3)",
            meta.channels
        ));
    }
    // Checked before any work, so a wrong artifact fails fast rather than after the tower.
    let labels = if args.embedding {
        None
    } else {
        let labels = model.labels().filter(|l| l.count > 0).ok_or_else(|| {
            format!(
                "{mpath}: the artifact has no stored labels \
                 (quantize it with `vlm quantize --labels ...`, or pass --embedding)"
            )
        })?;
        Some(labels)
    };

    let (img, pixels) = pixels(
        &args.image,
        (meta.width, meta.height),
        0,
        meta.resample,
        &meta.normalize(),
    )?;
    let (w, h) = (meta.width, meta.height);

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut arena = vec![0u8; model.arena_size_for_threads(threads)];
    let mut session = Session::new(&model, &mut arena).map_err(|e| format!("{mpath}: {e}"))?;
    session.set_threads(threads);
    let mut emb = vec![0.0f32; meta.embed_dim];
    let t = Instant::now();
    session
        .encode_image(&pixels, &mut emb)
        .map_err(|e| format!("{mpath}: vision tower: {e}"))?;
    // stderr, so stdout stays the result alone; the ISA is what cross-ISA checks compare.
    let _ = writeln!(
        io::stderr(),
        "vlm-lite: isa {}, {threads} thread(s), vision tower {:.1} ms, image {}x{} -> {w}x{h}",
        session.isa().name(),
        t.elapsed().as_secs_f64() * 1e3,
        img.width,
        img.height,
    );

    let mut out = io::BufWriter::new(io::stdout().lock());
    let written = match labels {
        None => write_embedding(&mut out, &emb),
        Some(labels) => {
            let mut probs = vec![0.0f32; labels.count];
            score_into(&meta.scorer(), &emb, labels.embeddings, &mut probs)
                .map_err(|e| format!("{mpath}: labels: {e}"))?;
            let mut order = vec![0usize; labels.count];
            rank_into(&probs, &mut order).map_err(|e| format!("{mpath}: labels: {e}"))?;
            order
                .iter()
                .take(args.top.unwrap_or(usize::MAX))
                .try_for_each(|&i| writeln!(out, "{:.4}  {}", probs[i], labels.name(i)))
        }
    };
    match written.and_then(|()| out.flush()) {
        // A reader that stopped early (`| head -1`) got what it asked for.
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(format!("stdout: {e}")),
        _ => Ok(()),
    }
}

/// The image file's pixels as the tower takes them (CHW, normalised), and the image as
/// read. `longest_edge_first` > 0: Idefics3's first resize before the tower's.
fn pixels(
    path: &Path,
    (w, h): (usize, usize),
    longest_edge_first: usize,
    resample: Resample,
    norm: &Normalize,
) -> Result<(ppm::Rgb8, Vec<f32>), String> {
    let ipath = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("{ipath}: {e}"))?;
    let img = ppm::parse(&bytes).map_err(|e| format!("{ipath}: {e}"))?;
    let mut rgb = std::borrow::Cow::Borrowed(&img.pixels[..]);
    let mut size = (img.width, img.height);
    if longest_edge_first > 0 {
        let (fh, fw) = first_resize(size.1, size.0, longest_edge_first);
        rgb = resize::resize(&rgb, size, (fw, fh), resample).into();
        size = (fw, fh);
    }
    let rgb = resize::resize(&rgb, size, (w, h), resample);
    let mut pixels = vec![0.0f32; rgb.len()];
    norm.rgb8_to_chw(&rgb, w, h, &mut pixels)
        .map_err(|e| format!("{ipath}: {e}"))?;
    Ok((img, pixels))
}

/// A greedy caption of the image after the artifact's stored prompt.
fn caption(args: &Args, model: &Model) -> Result<(), String> {
    let mpath = args.model.display();
    if args.top.is_some() || args.embedding {
        return Err(format!(
            "{mpath}: --top and --embedding are for classifiers; this artifact is a captioner"
        ));
    }
    let meta = CaptionMeta::from_model(model).map_err(|e| format!("{mpath}: {e}"))?;
    if meta.channels != 3 {
        return Err(format!(
            "{mpath}: the vision tower takes {} channels; vlm-lite feeds RGB (3)",
            meta.channels
        ));
    }
    let prompt = model.prompt_ids().ok_or_else(|| {
        format!(
            "{mpath}: the artifact stores no prompt (quantize it again with this version's \
             `vlm quantize`)"
        )
    })?;
    // Checked before any work: text needs the table unless ids were asked for.
    let vocab = match (model.vocab(), args.tokens) {
        (_, true) => None,
        (Some(v), false) => Some(v),
        (None, false) => {
            return Err(format!(
                "{mpath}: the artifact has no token table (its tokenizer's decoder is not one \
                 vlm quantize can store; --tokens prints token ids)"
            ))
        }
    };
    let (img, pixels) = pixels(
        &args.image,
        (meta.width, meta.height),
        meta.longest_edge_first,
        meta.resample,
        &meta.normalize(),
    )?;
    let opts = Options {
        max_tokens: args.max_tokens.unwrap_or(Options::default().max_tokens),
        repetition_penalty: 1.0,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut arena = vec![0u8; Generator::<Cpu>::arena_bytes(model, threads)];
    let mut work = vec![0.0f32; Generator::<Cpu>::work_floats(model, &meta)];
    let gen_err = |e: GenerateError| format!("{mpath}: {e}");
    let mut g =
        Generator::new(model, meta, &mut arena, &mut work, Isa::detect()).map_err(gen_err)?;
    g.session_mut().set_threads(threads);
    let t = Instant::now();
    g.encode_image(&pixels).map_err(gen_err)?;
    let encoded = t.elapsed();
    g.prefill(prompt, opts.max_tokens).map_err(gen_err)?;
    let prefilled = t.elapsed();
    let mut out = vec![0u32; opts.max_tokens];
    let n = greedy(&mut g, &opts, &mut [], &mut out, |_| true).map_err(gen_err)?;
    let decoded = t.elapsed() - prefilled;
    let _ = writeln!(
        io::stderr(),
        "vlm-lite: isa {}, {threads} thread(s), image encode {:.1} ms, prefill {:.1} ms \
         ({} tokens), {n} tokens in {:.1} ms, image {}x{}",
        g.session_mut().isa().name(),
        encoded.as_secs_f64() * 1e3,
        (prefilled - encoded).as_secs_f64() * 1e3,
        prompt.len(),
        decoded.as_secs_f64() * 1e3,
        img.width,
        img.height,
    );
    let out = &out[..n];
    let mut stdout = io::stdout().lock();
    let written = match vocab {
        None => {
            // The ids, then a hash of the last logits' bits: equal hashes on two machines
            // mean they computed the same bits, not merely picked the same tokens.
            let ids: Vec<String> = out.iter().map(u32::to_string).collect();
            let hash = g.logits().iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
                (h ^ u64::from(x.to_bits())).wrapping_mul(0x0100_0000_01b3)
            });
            writeln!(stdout, "{}\nlogits fnv1a {hash:016x}", ids.join(" "))
        }
        Some(v) => {
            let bytes: Vec<u8> = v.pieces(out).flatten().copied().collect();
            // Trimmed, as `vlm caption` prints it.
            writeln!(stdout, "{}", String::from_utf8_lossy(&bytes).trim())
        }
    };
    match written.and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(format!("stdout: {e}")),
        _ => Ok(()),
    }
}

/// One line, `[x, y, ...]`: each f32 in its shortest form that reads back to the same bits.
fn write_embedding(out: &mut impl Write, emb: &[f32]) -> io::Result<()> {
    write!(out, "[")?;
    for (i, v) in emb.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        write!(out, "{sep}{v}")?;
    }
    writeln!(out, "]")
}

fn main() -> ExitCode {
    let result = parse_args(std::env::args_os().skip(1)).and_then(|cmd| match cmd {
        Command::Help => writeln!(io::stdout(), "{USAGE}").map_err(|e| format!("stdout: {e}")),
        Command::Run(args) => run(&args),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            let _ = writeln!(io::stderr(), "vlm-lite: error: {msg}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        match parse_args(args.iter().map(OsString::from))? {
            Command::Run(a) => Ok(a),
            Command::Help => Err("help".into()),
        }
    }

    #[test]
    fn arguments() {
        let a = parse(&["m.vlmq", "--top", "2", "i.ppm", "--embedding"]).unwrap();
        assert_eq!(
            a,
            Args {
                model: "m.vlmq".into(),
                image: "i.ppm".into(),
                top: Some(2),
                embedding: true,
                max_tokens: None,
                tokens: false,
            }
        );
        assert_eq!(parse(&["m", "-"]).unwrap().image, PathBuf::from("-"));
        let a = parse(&["m", "i", "--max-tokens", "7", "--tokens"]).unwrap();
        assert_eq!((a.max_tokens, a.tokens), (Some(7), true));
        assert_eq!(parse(&["m", "i", "--help"]).unwrap_err(), "help");
        for bad in [
            &["m"][..],
            &["m", "i", "j"],
            &["m", "i", "--top"],
            &["m", "i", "--top", "0"],
            &["m", "i", "--top", "x"],
            &["m", "i", "--max-tokens", "0"],
            &["m", "i", "--max-tokens"],
            &["m", "i", "--frobnicate"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn embedding_line_round_trips() {
        let emb = [0.1f32, -2.5e-7, 3.0];
        let mut out = Vec::new();
        write_embedding(&mut out, &emb).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.starts_with('[') && line.ends_with("]\n"), "{line}");
        let back: Vec<f32> = line.trim()[1..line.trim().len() - 1]
            .split(", ")
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(back, emb);
    }
}
