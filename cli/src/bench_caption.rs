//! `vlm bench --caption`: a captioner's three speeds — one image through the vision
//! tower and projector, the prompt's prefill, and token-by-token decoding — on 1 and 2
//! threads (or `--threads`), with the arena a caption needs.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use vlm_host::caption::Captioner;
use vlm_models::generate::argmax;

use crate::bench::{print_profile, profile, BenchArgs, ProfileRow};
use crate::caption::CaptionModelArg;

#[derive(Serialize)]
struct Row {
    threads: usize,
    image_encode_ms: f64,
    prefill_tokens: usize,
    prefill_tokens_per_s: f64,
    decode_tokens: usize,
    decode_tokens_per_s: f64,
}

#[derive(Serialize)]
struct CaptionBench {
    model: String,
    precision: &'static str,
    isa: &'static str,
    /// The GPU the captioner ran on (`--device`), if not the CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    context: usize,
    arena_bytes: usize,
    /// The decoder's KV caches: element type ("int8", "f32") and bytes, all layers.
    kv_cache: &'static str,
    kv_cache_bytes: usize,
    work_bytes: usize,
    runs: usize,
    rows: Vec<Row>,
    /// With --profile: one decode step, then one image encode, per op (on the first
    /// thread count).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    decode_profile: Vec<ProfileRow>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    encode_profile: Vec<ProfileRow>,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

pub fn bench_caption(args: &BenchArgs, decode_tokens: usize) -> Result<()> {
    let Some(model) = args.model.clone() else {
        bail!("--caption needs --model DIR|FILE (a captioner)");
    };
    if decode_tokens == 0 {
        bail!("--decode-tokens must be at least 1");
    }
    let threads: Vec<usize> = if args.threads_given {
        vec![args.threads]
    } else {
        vec![1, 2]
    };
    let arg = CaptionModelArg {
        model: Some(model.clone()),
        context: args.context,
        threads: Some(1),
        device: args.device,
    };
    let cap: Captioner = arg.load()?;
    let meta = *cap.meta();
    let ids = cap.prompt_ids("a picture of")?;
    if ids.len() + decode_tokens > meta.context {
        bail!(
            "a {}-token prompt and {decode_tokens} new tokens exceed the context of {}",
            ids.len(),
            meta.context
        );
    }
    let pixels = vec![0.25f32; meta.channels * meta.height * meta.width];
    let (a, w) = cap.buffers();
    let (mut arena, mut work) = (vec![0u8; a], vec![0.0f32; w]);
    let mut rows = Vec::new();
    let isa = vlm_runtime::kernels::Isa::detect().name();
    // What the linear layers multiply: int8 once any of them is (the rest are fallback).
    let int8 = cap
        .model()
        .runtime()
        .graphs()
        .flat_map(|g| g.ops())
        .any(|(_, op)| op.precision() == "int8");
    let precision = if int8 { "int8" } else { "fp32" };
    for &t in &threads {
        cap.model().set_threads(t);
        let mut g = cap.generator(&mut arena, &mut work)?;
        let (mut enc, mut pre, mut dec) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..args.warmup + args.runs {
            let t0 = Instant::now();
            g.encode_image(&pixels)?;
            let t1 = Instant::now();
            g.prefill(&ids, decode_tokens)?;
            let t2 = Instant::now();
            // Every step runs, whatever is sampled: stop tokens do not end a timing.
            let mut id = argmax(g.logits());
            for _ in 0..decode_tokens {
                g.step(id)?;
                id = argmax(g.logits());
            }
            let t3 = Instant::now();
            if run >= args.warmup {
                enc.push((t1 - t0).as_secs_f64());
                pre.push((t2 - t1).as_secs_f64());
                dec.push((t3 - t2).as_secs_f64());
            }
        }
        rows.push(Row {
            threads: t,
            image_encode_ms: median(enc) * 1e3,
            prefill_tokens: ids.len(),
            prefill_tokens_per_s: ids.len() as f64 / median(pre),
            decode_tokens,
            decode_tokens_per_s: decode_tokens as f64 / median(dec),
        });
    }
    let (mut decode_profile, mut encode_profile) = (Vec::new(), Vec::new());
    if args.profile {
        cap.model().set_threads(threads[0]);
        let mut g = cap.generator(&mut arena, &mut work)?;
        g.encode_image(&pixels)?;
        g.prefill(&ids, args.warmup + args.runs)?;
        let model = *g.session_mut().model();
        let step = model
            .graph_index(vlm_runtime::Role::Decoder)
            .ok_or_else(|| anyhow::anyhow!("the captioner has no decoder step"))?;
        let image = model
            .graph_index(vlm_runtime::Role::ImageEncoder)
            .ok_or_else(|| anyhow::anyhow!("the captioner has no image encoder"))?;
        // Each profiled step appends to the cache the prefill filled: the steps a
        // caption's tokens take.
        let embedding = vec![0.01f32; meta.hidden];
        let input = vlm_runtime::Input::F32(&embedding);
        decode_profile = profile(g.session_mut(), step, input, (args.warmup, args.runs))?;
        let input = vlm_runtime::Input::F32(&pixels);
        encode_profile = profile(
            g.session_mut(),
            image,
            input,
            (args.warmup.min(1), args.runs),
        )?;
    }
    let (kv_cache, kv_cache_bytes) = kv_cache(&cap)?;
    let report = CaptionBench {
        model: model.display().to_string(),
        precision,
        isa,
        device: cap.model().device(),
        context: meta.context,
        arena_bytes: a,
        kv_cache,
        kv_cache_bytes,
        work_bytes: 4 * w,
        runs: args.runs,
        rows,
        decode_profile,
        encode_profile,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} ({}), {} on {}: arena {:.1} MiB for a context of {} (work {:.1} MiB), median of {} runs",
        report.model,
        meta.arch.class_name(),
        precision,
        report.device.as_deref().unwrap_or(isa),
        a as f64 / (1 << 20) as f64,
        meta.context,
        (4 * w) as f64 / (1 << 20) as f64,
        args.runs
    );
    println!(
        "KV cache: {}, {:.1} MiB",
        report.kv_cache,
        kv_cache_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "{:>8} {:>16} {:>22} {:>22}",
        "threads", "image encode ms", "prefill tokens/s", "decode tokens/s"
    );
    for r in &report.rows {
        println!(
            "{:>8} {:>16.1} {:>14.1} ({:>3} tok) {:>14.1} ({:>3} tok)",
            r.threads,
            r.image_encode_ms,
            r.prefill_tokens_per_s,
            r.prefill_tokens,
            r.decode_tokens_per_s,
            r.decode_tokens
        );
    }
    for (what, rows) in [
        ("one decode step", &report.decode_profile),
        ("one image encode", &report.encode_profile),
    ] {
        if !rows.is_empty() {
            println!();
            println!("{what}, {} thread(s):", threads[0]);
            print_profile(rows);
        }
    }
    Ok(())
}

/// The decoder step's KV caches (its state buffers but the one-word position): their
/// element type and bytes.
fn kv_cache(cap: &Captioner) -> Result<(&'static str, usize)> {
    let g = cap
        .model()
        .runtime()
        .graph(vlm_runtime::Role::Decoder)
        .context("the captioner has no decoder step")?;
    let caches: Vec<_> = g
        .states()
        .filter(|p| p.dtype != vlm_runtime::model::DType::U32)
        .collect();
    let kind = match caches
        .iter()
        .any(|p| p.dtype == vlm_runtime::model::DType::I8)
    {
        true => "int8 (a scale per token and head)",
        false => "f32",
    };
    Ok((
        kind,
        caches.iter().map(|p| 4 * g.buffer_len(p.mat.buf)).sum(),
    ))
}
