//! `vlm-lite MODEL.vlmq IMAGE.ppm [--top K] [--embedding]`: zero-shot classification on a
//! device with the runtime alone, against the labels stored in the artifact at quantize
//! time (no text tower, tokenizer or ONNX here). `--embedding` prints the raw image
//! embedding instead, to compare one artifact's output across machines and ISAs.
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

use vlm_models::siglip::Meta;
use vlm_runtime::preprocess::Normalize;
use vlm_runtime::{rank_into, score_into, Model, Role, Session};

const USAGE: &str = "usage: vlm-lite MODEL.vlmq IMAGE.ppm [--top K] [--embedding]";

#[derive(Debug, PartialEq)]
struct Args {
    model: PathBuf,
    image: PathBuf,
    top: Option<usize>,
    embedding: bool,
}

enum Command {
    Run(Args),
    Help,
}

fn parse_args(mut args: impl Iterator<Item = OsString>) -> Result<Command, String> {
    let mut paths = Vec::new();
    let mut top = None;
    let mut embedding = false;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(Command::Help),
            Some("--embedding") => embedding = true,
            Some("--top") => {
                let k = args.next().ok_or("--top needs a number")?;
                let k = k
                    .to_str()
                    .and_then(|k| k.parse::<usize>().ok())
                    .filter(|&k| k > 0)
                    .ok_or_else(|| {
                        format!("--top {}: not a positive number", k.to_string_lossy())
                    })?;
                top = Some(k);
            }
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
    let ipath = args.image.display();

    let (buf, start) = read_aligned(&args.model).map_err(|e| format!("{mpath}: {e}"))?;
    let model = Model::from_bytes(&buf[start..])
        .map_err(|e| format!("{mpath}: not a valid .vlmq artifact: {e}"))?;
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

    let bytes = std::fs::read(&args.image).map_err(|e| format!("{ipath}: {e}"))?;
    let img = ppm::parse(&bytes).map_err(|e| format!("{ipath}: {e}"))?;
    let (w, h) = (meta.width, meta.height);
    let rgb = resize::resize(&img.pixels, (img.width, img.height), (w, h), meta.resample);
    let norm = Normalize {
        rescale: meta.rescale,
        mean: meta.mean,
        std: meta.std,
    };
    let mut pixels = vec![0.0f32; rgb.len()];
    norm.rgb8_to_chw(&rgb, w, h, &mut pixels)
        .map_err(|e| format!("{ipath}: {e}"))?;

    let mut arena = vec![0u8; model.arena_size()];
    let mut session = Session::new(&model, &mut arena).map_err(|e| format!("{mpath}: {e}"))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
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
            }
        );
        assert_eq!(parse(&["m", "-"]).unwrap().image, PathBuf::from("-"));
        assert_eq!(parse(&["m", "i", "--help"]).unwrap_err(), "help");
        for bad in [
            &["m"][..],
            &["m", "i", "j"],
            &["m", "i", "--top"],
            &["m", "i", "--top", "0"],
            &["m", "i", "--top", "x"],
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
