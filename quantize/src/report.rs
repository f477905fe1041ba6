//! The human-readable forms of a [`QuantReport`]: a terminal summary and a self-contained
//! HTML page. JSON is serde_json's job, done by the caller.

use std::fmt::Write as _;

use crate::caption_pipeline::{Agreement, CaptionEval, CaptionQuantReport};
use crate::int8::{LayerReport, TowerReport};
use crate::kv_cache::KvCache;
use crate::pipeline::{QuantReport, ZeroShot};

/// Both renderings draw from the same rows, so the page and the terminal cannot disagree.
struct Table {
    head: &'static [&'static str],
    /// Numeric columns: right-aligned.
    right: &'static [bool],
    rows: Vec<Vec<String>>,
}

/// The quantization options, as both reports state them (`per`: what the fallback
/// count is per, if anything).
fn options_line(o: &crate::int8::Options, per: &str) -> String {
    let smooth = o
        .smooth_alpha
        .map_or("off".to_string(), |a| format!("alpha {a}"));
    let bits = match o.weight_bits {
        crate::int8::WeightBits::Eight => "8-bit",
        crate::int8::WeightBits::Auto => "7-bit where they cost little",
        crate::int8::WeightBits::Seven => "7-bit",
    };
    let x_bits = match o.activation_bits {
        crate::int8::ActivationBits::Eight => "8-bit",
        crate::int8::ActivationBits::Seven => "7-bit where the weights are",
    };
    format!(
        "options: ranges {}, SmoothQuant {smooth}, weights {bits}, activations {x_bits}, budget median cosine >= {}, at most {} fp32 fallback layers{per}",
        o.method.name(),
        o.min_cosine,
        o.max_fallback
    )
}

fn mib(bytes: u64) -> String {
    format!(
        "{:.1} MiB ({bytes} bytes)",
        bytes as f64 / (1024.0 * 1024.0)
    )
}

fn summary_lines(r: &QuantReport) -> Vec<String> {
    let checks: Vec<String> = r
        .import_check
        .iter()
        .map(|(n, c)| format!("{n} {c:.6}"))
        .collect();
    vec![
        format!("model: {}", r.model.display()),
        options_line(&r.options, ""),
        format!(
            "import check (runtime fp32 vs tract, cosine): {}",
            checks.join(", ")
        ),
        format!("text tower calibrated on: {}", r.text_calibration),
        format!("label embeddings stored: {}", r.labels),
    ]
}

fn tower_lines(t: &TowerReport, budget: f32) -> Vec<String> {
    let c = &t.cosine;
    let fallback = if t.fallback.is_empty() {
        "none".to_string()
    } else {
        t.fallback.join(", ")
    };
    vec![
        format!(
            "{} calibration / {} evaluation samples, {:.3} GMAC",
            t.calibration_samples,
            t.evaluation_samples,
            t.macs as f64 / 1e9
        ),
        format!(
            "embedding cosine vs fp32 over {} samples: median {:.6}, min {:.6}, mean {:.6}",
            c.count, c.median, c.min, c.mean
        ),
        format!(
            "budget (median >= {budget}): {}",
            if t.budget_met { "met" } else { "NOT met" }
        ),
        format!("fp32 fallback layers ({}): {fallback}", t.fallback.len()),
    ]
}

fn layer_table(t: &TowerReport) -> Table {
    let rows = t
        .layers
        .iter()
        .map(|l| {
            vec![
                l.index.to_string(),
                l.kind.to_string(),
                l.precision.to_string(),
                format!("{:.1}", l.sqnr_db),
                l.own_sqnr_db.map_or("-".into(), |v| format!("{v:.1}")),
                l.input_range
                    .map_or("-".into(), |(a, b)| format!("[{a:.4}, {b:.4}]")),
                l.name.clone(),
            ]
        })
        .collect();
    Table {
        head: &[
            "#",
            "kind",
            "precision",
            "SQNR dB",
            "own SQNR dB",
            "input range",
            "name",
        ],
        right: &[true, false, false, true, true, true, false],
        rows,
    }
}

fn sizes_line(r: &QuantReport) -> String {
    let s = &r.sizes;
    format!(
        "file sizes: ONNX {} -> artifact {}: {:.1}% of the ONNX size",
        mib(s.onnx_bytes),
        mib(s.artifact_bytes),
        s.ratio * 100.0
    )
}

fn zero_shot_table(z: &ZeroShot) -> Table {
    let row = |label: String, fp: f64, q: Option<f64>| {
        vec![
            label,
            format!("{fp:.2}"),
            q.map_or("-".into(), |q| format!("{q:.2}")),
            q.map_or("-".into(), |q| format!("{:+.2}", q - fp)),
        ]
    };
    let mut rows = Vec::new();
    // Matched by name, not position: a row missing on one side shows as "-", not shifted.
    for t in &z.fp32.tasks {
        let q = z
            .int8
            .tasks
            .iter()
            .find(|q| q.name == t.name)
            .map(|q| q.accuracy);
        rows.push(row(
            format!("{} top-1 ({} items)", t.name, t.total),
            t.accuracy,
            q,
        ));
    }
    for t in &z.fp32.retrieval {
        let q = z.int8.retrieval.iter().find(|q| q.name == t.name);
        let dirs = [
            ("image->text", t.image_to_text, q.map(|q| q.image_to_text)),
            ("text->image", t.text_to_image, q.map(|q| q.text_to_image)),
        ];
        for (dir, fp, q) in dirs {
            for (i, k) in [1, 5, 10].into_iter().enumerate() {
                rows.push(row(
                    format!("{} {dir} R@{k}", t.name),
                    fp[i],
                    q.map(|q| q[i]),
                ));
            }
        }
    }
    Table {
        head: &["metric (%)", "fp32", "int8", "delta (points)"],
        right: &[false, true, true, true],
        rows,
    }
}

fn text_table(t: &Table, out: &mut Vec<String>) {
    let mut w: Vec<usize> = t.head.iter().map(|h| h.chars().count()).collect();
    for row in &t.rows {
        for (wi, c) in w.iter_mut().zip(row) {
            *wi = (*wi).max(c.chars().count());
        }
    }
    let last = t.head.len() - 1;
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from("  ");
        for (i, c) in cells.enumerate() {
            let width = w[i];
            let _ = match (i == last, t.right[i]) {
                // The last column is not padded: layer names can be very long.
                (true, _) => write!(s, "{c}"),
                (false, true) => write!(s, "{c:>width$}  "),
                (false, false) => write!(s, "{c:<width$}  "),
            };
        }
        s.trim_end().to_string()
    };
    out.push(line(&mut t.head.iter().copied()));
    for row in &t.rows {
        out.push(line(&mut row.iter().map(String::as_str)));
    }
}

/// Names come from model files; control characters (ANSI escapes) must not reach a terminal.
fn clean(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            o.extend(c.escape_default());
        } else {
            o.push(c);
        }
    }
    o
}

/// What both renderings show, from either kind of report.
struct View<'a> {
    title: &'static str,
    summary: Vec<String>,
    budget: f32,
    /// "tower" (SigLIP's) or "graph" (a captioner's).
    noun: &'static str,
    towers: &'a [TowerReport],
    sizes: String,
    /// Headed tables after the sizes (fp32 vs int8 evaluations).
    sections: Vec<(String, Table)>,
}

fn siglip_view(r: &QuantReport) -> View<'_> {
    View {
        title: "vlm quantize report",
        summary: summary_lines(r),
        budget: r.options.min_cosine,
        noun: "tower",
        towers: &r.towers,
        sizes: sizes_line(r),
        sections: r
            .zero_shot
            .iter()
            .map(|z| {
                (
                    "zero-shot evaluation, fp32 (the runtime's fp32 graphs) vs int8".to_string(),
                    zero_shot_table(z),
                )
            })
            .collect(),
    }
}

fn agreement_line(what: &str, a: &Agreement) -> String {
    format!(
        "{what}: int8 greedy tokens identical to fp32 on {} of {} images ({:.1}%); {:.1}% of fp32's tokens before the first difference",
        a.identical,
        a.images,
        100.0 * a.identical_share(),
        100.0 * a.tokens_before_divergence
    )
}

fn caption_eval_table(e: &CaptionEval) -> Table {
    let row = |label: String, fp: f64, q: f64| {
        vec![
            label,
            format!("{fp:.3}"),
            format!("{q:.3}"),
            format!("{:+.3}", q - fp),
        ]
    };
    let (f, q) = (&e.fp32, &e.int8);
    let mut rows = vec![
        row("BLEU-4".into(), f.bleu[3], q.bleu[3]),
        row("CIDEr-D".into(), f.cider_d, q.cider_d),
    ];
    // Matched by name, as the zero-shot table is.
    for g in &f.groups {
        if let Some(h) = q.groups.iter().find(|h| h.name == g.name) {
            rows.push(row(
                format!("{} objects named % ({} images)", g.name, g.images),
                g.objects_named,
                h.objects_named,
            ));
            rows.push(row(
                format!("{} count right %", g.name),
                g.count_right,
                h.count_right,
            ));
        }
    }
    Table {
        head: &["metric", "fp32", "int8", "delta"],
        right: &[false, true, true, true],
        rows,
    }
}

fn caption_view(r: &CaptionQuantReport) -> View<'_> {
    let mut summary = vec![
        format!("model: {} ({})", r.model.display(), r.architecture),
        options_line(&r.options, " per graph"),
        format!(
            "calibration: {} images captioned in fp32 after the prompt {:?}, {} decoder positions",
            r.calibration.images, r.calibration.prompt, r.calibration.decoder_rows
        ),
        "token embedding: int8, one scale per row; prefill and decoder step share the decoder's int8 weights".into(),
        {
            let k = &r.kv_cache;
            let how = match k.storage {
                KvCache::Int8 => "int8 with an f32 scale per token and head, attention by exact integer q·k",
                KvCache::F32 => "f32 rows, attention in the precision above",
            };
            format!(
                "KV cache: {how}; {} caches of {} positions, {} ({:.0}% of f32's {})",
                k.caches,
                k.positions,
                mib(k.bytes),
                100.0 * k.bytes as f64 / k.f32_bytes.max(1) as f64,
                mib(k.f32_bytes)
            )
        },
        agreement_line("held-out calibration images", &r.agreement),
        match &r.device.no_vocab_because {
            None => format!(
                "for devices (vlm-lite): the prompt as {} token ids and a {}-token text table",
                r.device.prompt_tokens, r.device.vocab_tokens
            ),
            Some(why) => format!(
                "for devices (vlm-lite): the prompt as {} token ids; no text table ({why}): \
                 vlm-lite prints token ids",
                r.device.prompt_tokens
            ),
        },
    ];
    if let Some(e) = &r.eval {
        summary.push(agreement_line(
            &format!("caption set {}", e.data.display()),
            &e.agreement,
        ));
    }
    View {
        title: "vlm quantize report (captioner)",
        summary,
        budget: r.options.min_cosine,
        noun: "graph",
        towers: &r.graphs,
        sizes: format!(
            "file sizes: fp32 artifact {} -> int8 artifact {}: {:.1}%",
            mib(r.fp32_bytes),
            mib(r.artifact_bytes),
            100.0 * r.artifact_bytes as f64 / r.fp32_bytes.max(1) as f64
        ),
        sections: r
            .eval
            .iter()
            .map(|e| {
                (
                    format!("caption evaluation on {}, fp32 vs int8", e.data.display()),
                    caption_eval_table(e),
                )
            })
            .collect(),
    }
}

fn text_of(v: &View) -> String {
    let mut out = vec![v.title.to_string()];
    out.extend(v.summary.iter().cloned());
    for t in v.towers {
        out.push(String::new());
        out.push(format!("== {} {} ==", t.tower, v.noun));
        out.extend(tower_lines(t, v.budget));
        text_table(&layer_table(t), &mut out);
    }
    out.push(String::new());
    out.push(v.sizes.clone());
    for (head, table) in &v.sections {
        out.push(String::new());
        out.push(format!("{head}:"));
        text_table(table, &mut out);
    }
    out.iter().map(|l| clean(l) + "\n").collect()
}

/// The terminal summary: options, import check, per tower the embedding cosines, the
/// budget, fallback layers and a per-layer table; file sizes; zero-shot fp32 vs int8.
pub fn render_text(r: &QuantReport) -> String {
    text_of(&siglip_view(r))
}

/// A captioner's terminal summary: calibration, caption agreement, per graph what
/// [`render_text`] shows per tower, sizes, and the caption set's fp32 vs int8 scores.
pub fn render_caption_text(r: &CaptionQuantReport) -> String {
    text_of(&caption_view(r))
}

fn esc(s: &str) -> String {
    // '&' first, or the entities added after it would be escaped again.
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn html_list(lines: &[String], h: &mut String) {
    h.push_str("<ul>\n");
    for l in lines {
        let _ = writeln!(h, "<li>{}</li>", esc(l));
    }
    h.push_str("</ul>\n");
}

fn html_table(t: &Table, h: &mut String) {
    let cell = |tag: &str, right: bool, text: &str| {
        let class = if right { " class=\"num\"" } else { "" };
        format!("<{tag}{class}>{}</{tag}>", esc(text))
    };
    h.push_str("<table>\n<thead><tr>");
    for (c, &r) in t.head.iter().zip(t.right) {
        h.push_str(&cell("th", r, c));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        h.push_str("<tr>");
        for (c, &r) in row.iter().zip(t.right) {
            h.push_str(&cell("td", r, c));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table>\n");
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|&m| f <= m)
        .unwrap_or(10.0)
}

const INT8_COLOUR: &str = "#1f77b4";
const FP32_COLOUR: &str = "#d62728";

/// One line plot of (layer, dB) points, x = layer index. Infinite values (an exact layer)
/// are clipped to the plot's edge; NaN ones are skipped and the line broken there. Every
/// coordinate is computed from finite values only, so the SVG never holds "NaN" or "inf".
fn svg_plot(title: &str, pts: &[(&LayerReport, f64)], h: &mut String) {
    // Size and margins (left, right, top, bottom).
    const W: f64 = 900.0;
    const H: f64 = 300.0;
    const L: f64 = 60.0;
    const R: f64 = 20.0;
    const T: f64 = 34.0;
    const B: f64 = 44.0;
    let finite = pts.iter().map(|p| p.1).filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((0.0f64, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let step = nice_step((hi - lo).max(1.0) / 6.0);
    let decimals = (-step.log10()).ceil().max(0.0) as usize;
    let lo = (lo / step).floor() * step;
    let hi = ((hi / step).ceil() * step).max(lo + step);
    let x0 = pts.iter().map(|p| p.0.index).min().unwrap_or(0);
    let x1 = pts.iter().map(|p| p.0.index).max().unwrap_or(0);
    let span = (x1 - x0).max(1) as f64;
    let sx = |x: usize| L + (x - x0) as f64 / span * (W - L - R);
    let sy = |y: f64| T + (hi - y.clamp(lo, hi)) / (hi - lo) * (H - T - B);
    let (title, xr, yb, xm, ym) = (esc(title), W - R, H - B, (L + W - R) / 2.0, H / 2.0);
    let _ = write!(
        h,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img">
<text x="{L}" y="20" font-weight="bold">{title}</text>
<circle cx="600" cy="16" r="4" fill="{INT8_COLOUR}"/><text x="608" y="20">int8 / no weights</text>
<circle cx="750" cy="16" r="4" fill="{FP32_COLOUR}"/><text x="758" y="20">fp32 fallback</text>
<line x1="{L}" y1="{yb}" x2="{xr}" y2="{yb}" stroke="#333"/>
<text x="{xm}" y="{}" text-anchor="middle">layer index</text>
<text x="14" y="{ym}" text-anchor="middle" transform="rotate(-90 14 {ym})">dB</text>
"##,
        H - 6.0
    );
    for i in 0..=((hi - lo) / step).round() as usize {
        let v = lo + step * i as f64;
        let y = sy(v);
        let _ = writeln!(
            h,
            r##"<line x1="{L}" y1="{y:.1}" x2="{xr}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v:.decimals$}</text>"##,
            L - 6.0,
            y + 4.0
        );
    }
    let xstep = nice_step(span / 10.0).max(1.0) as usize;
    for x in (x0.div_ceil(xstep) * xstep..=x1).step_by(xstep) {
        let (px, py) = (sx(x), yb + 16.0);
        let _ = writeln!(
            h,
            r#"<text x="{px:.1}" y="{py}" text-anchor="middle">{x}</text>"#
        );
    }
    for seg in pts.split(|p| p.1.is_nan()).filter(|s| s.len() > 1) {
        let coords: Vec<String> = seg
            .iter()
            .map(|p| format!("{:.1},{:.1}", sx(p.0.index), sy(p.1)))
            .collect();
        let coords = coords.join(" ");
        let _ = writeln!(
            h,
            r#"<polyline points="{coords}" fill="none" stroke="{INT8_COLOUR}" stroke-opacity="0.5"/>"#
        );
    }
    for &(l, v) in pts.iter().filter(|p| !p.1.is_nan()) {
        let fallback = l.precision == "fp32";
        let (c, r) = if fallback {
            (FP32_COLOUR, 4.0)
        } else {
            (INT8_COLOUR, 2.5)
        };
        let (cx, cy) = (sx(l.index), sy(v));
        let tip = esc(&format!(
            "#{} {} ({}, {}): {v:.1} dB",
            l.index, l.name, l.kind, l.precision
        ));
        let _ = writeln!(
            h,
            r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="{r}" fill="{c}"><title>{tip}</title></circle>"#
        );
    }
    h.push_str("</svg>\n");
    let clipped = pts.iter().filter(|p| p.1.is_infinite()).count();
    let skipped = pts.iter().filter(|p| p.1.is_nan()).count();
    if clipped + skipped > 0 {
        let _ = writeln!(
            h,
            "<p class=\"note\">{clipped} layer(s) with infinite SQNR (exact output) drawn at the plot's edge; {skipped} with undefined (NaN) SQNR not drawn.</p>"
        );
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}\
th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}\
.num{text-align:right;font-variant-numeric:tabular-nums}\
td:last-child{word-break:break-all}.note{color:#666;font-size:13px}\
svg{display:block;font-size:11px;margin:1em 0}";

/// A self-contained HTML page (no external assets, no JS): the text report's content as
/// tables plus, per tower, SVG plots of accumulated and own-layer SQNR.
pub fn render_html(r: &QuantReport) -> String {
    html_of(&siglip_view(r))
}

/// [`render_html`] for a captioner's report.
pub fn render_caption_html(r: &CaptionQuantReport) -> String {
    html_of(&caption_view(r))
}

fn html_of(v: &View) -> String {
    let mut h = String::new();
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head>\n<body>\n<h1>{t}</h1>",
        t = esc(v.title)
    );
    html_list(&v.summary, &mut h);
    for t in v.towers {
        let _ = writeln!(h, "<h2>{} {}</h2>", esc(t.tower), v.noun);
        html_list(&tower_lines(t, v.budget), &mut h);
        let acc: Vec<_> = t.layers.iter().map(|l| (l, l.sqnr_db)).collect();
        let title = format!("{}: output SQNR per layer (accumulated error), dB", t.tower);
        svg_plot(&title, &acc, &mut h);
        let own: Vec<_> = t
            .layers
            .iter()
            .filter_map(|l| Some((l, l.own_sqnr_db?)))
            .collect();
        if own.is_empty() {
            h.push_str("<p class=\"note\">No linear layers: no own-layer SQNR plot.</p>\n");
        } else {
            let title = format!(
                "{}: own-layer SQNR of linear layers (fp32 inputs), dB",
                t.tower
            );
            svg_plot(&title, &own, &mut h);
        }
        html_table(&layer_table(t), &mut h);
    }
    let _ = writeln!(h, "<h2>File sizes</h2>\n<p>{}</p>", esc(&v.sizes));
    for (head, table) in &v.sections {
        let _ = writeln!(h, "<h2>{}</h2>", esc(head));
        html_table(table, &mut h);
    }
    h.push_str("</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{Calibration, EvalReport, RetrievalResult, TaskResult};
    use crate::int8::{CosineStats, Options};
    use crate::pipeline::FileSizes;

    const HOSTILE: &str = "<script>alert(1)</script>";

    fn layer(
        index: usize,
        name: &str,
        precision: &'static str,
        sqnr: f64,
        own: Option<f64>,
    ) -> LayerReport {
        LayerReport {
            index,
            name: name.into(),
            kind: if own.is_some() { "MatMul" } else { "Add" },
            precision,
            sqnr_db: sqnr,
            own_sqnr_db: own,
            own_sqnr_7bit_db: own.map(|db| db - 2.5),
            own_sqnr_7bit_x_db: None,
            input_range: own.map(|_| (-3.5, 4.25)),
        }
    }

    fn tower(tower: &'static str, layers: Vec<LayerReport>, fallback: Vec<String>) -> TowerReport {
        TowerReport {
            tower,
            calibration_samples: 12,
            evaluation_samples: 4,
            macs: 4_400_000_000,
            cosine: CosineStats {
                median: 0.9994,
                min: 0.998,
                mean: 0.9991,
                count: 4,
            },
            fallback,
            budget_met: true,
            layers,
        }
    }

    fn eval(shift: f64) -> EvalReport {
        EvalReport {
            tasks: vec![TaskResult {
                name: "pets".into(),
                correct: 90,
                total: 100,
                accuracy: 90.0 + shift,
                calibration: Calibration {
                    median_true: 0.8,
                    median_best_wrong: 0.05,
                    threshold_exact: 85.0,
                    bins: Vec::new(),
                },
            }],
            retrieval: vec![RetrievalResult {
                name: "coco-mini".into(),
                images: 50,
                captions: 250,
                image_to_text: [60.0 + shift, 85.0, 92.0],
                text_to_image: [45.0, 75.0 + shift, 84.0],
            }],
        }
    }

    fn report() -> QuantReport {
        let vision = tower(
            "vision",
            vec![
                layer(0, "patch_embed/Conv", "int8", 38.2, Some(41.0)),
                layer(1, "encoder/layers.0/Add", "-", f64::INFINITY, None),
                layer(
                    2,
                    "encoder/layers.0/mlp/fc1/MatMul",
                    "fp32",
                    24.5,
                    Some(f64::INFINITY),
                ),
                layer(3, HOSTILE, "int8", f64::NAN, Some(30.0)),
                layer(4, "head/Add", "-", f64::NEG_INFINITY, None),
            ],
            vec!["encoder/layers.0/mlp/fc1/MatMul".into()],
        );
        let text = tower(
            "text",
            vec![
                layer(0, "token_embedding/Gather", "-", 90.0, None),
                layer(1, "text/fc 'q' & \"k\"", "int8", 33.3, Some(35.0)),
            ],
            vec![],
        );
        QuantReport {
            model: "models/siglip-base".into(),
            options: Options::default(),
            import_check: vec![("vision".into(), 0.999_998), ("text".into(), 0.999_999)],
            towers: vec![vision, text],
            sizes: FileSizes {
                onnx_bytes: 812_000_000,
                artifact_bytes: 205_436_000,
                ratio: 0.253,
            },
            labels: 3,
            text_calibration: "42 prompts".into(),
            zero_shot: Some(ZeroShot {
                fp32: eval(0.0),
                int8: eval(-1.5),
            }),
        }
    }

    #[test]
    fn text_has_every_layer_ratio_and_zero_shot_rows() {
        let r = report();
        let s = render_text(&r);
        for t in &r.towers {
            for l in &t.layers {
                assert!(s.contains(&l.name), "missing {}", l.name);
            }
        }
        assert!(s.contains("25.3%"), "{s}");
        assert!(s.contains("pets top-1"));
        assert!(s.contains("-1.50"));
        for dir in ["image->text", "text->image"] {
            for k in [1, 5, 10] {
                assert!(s.contains(&format!("coco-mini {dir} R@{k}")), "{dir} R@{k}");
            }
        }
        assert!(s.contains("fp32 fallback layers (1): encoder/layers.0/mlp/fc1/MatMul"));
    }

    #[test]
    fn text_neutralises_control_characters() {
        let mut r = report();
        r.towers[1].layers[0].name = "evil\x1b[2Jname".into();
        let s = render_text(&r);
        assert!(!s.contains('\x1b'));
        assert!(s.contains("evil\\u{1b}[2Jname"));
    }

    /// The values of the numeric attributes of every SVG element.
    fn svg_numbers(html: &str) -> Vec<String> {
        let mut out = Vec::new();
        for svg in html.split("<svg").skip(1) {
            let svg = &svg[..svg.find("</svg>").expect("closed svg")];
            for attr in [
                "x", "y", "cx", "cy", "r", "x1", "x2", "y1", "y2", "width", "height", "viewBox",
                "points",
            ] {
                let pat = format!(" {attr}=\"");
                for (i, _) in svg.match_indices(&pat) {
                    let rest = &svg[i + pat.len()..];
                    out.push(rest[..rest.find('"').unwrap()].to_string());
                }
            }
        }
        out
    }

    #[test]
    fn html_is_self_contained_escaped_and_plots_are_finite() {
        let h = render_html(&report());
        assert!(h.starts_with("<!DOCTYPE html>"));
        assert!(h.trim_end().ends_with("</html>"));
        // Two plots per tower (accumulated, own-layer).
        assert_eq!(h.matches("<svg").count(), 4);
        assert_eq!(h.matches("</svg>").count(), 4);
        assert!(!h.contains("<script"));
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(h.contains("text/fc &#39;q&#39; &amp; &quot;k&quot;"));
        assert!(!h.contains("http-equiv") && !h.contains("src=") && !h.contains("href="));
        assert!(h.contains("25.3%"));
        let fallback_dot = format!(r#"r="4" fill="{FP32_COLOUR}"><title>#2 encoder/layers.0/mlp"#);
        assert_eq!(
            h.matches(&fallback_dot).count(),
            2,
            "fallback marked in both plots"
        );
        assert!(h.contains("not drawn"), "the NaN layer needs a note");
        let nums = svg_numbers(&h);
        assert!(nums.len() > 50);
        for n in nums {
            for v in n.split([' ', ',']).filter(|v| !v.is_empty()) {
                let f: f64 = v.parse().unwrap_or_else(|_| panic!("not a number: {v:?}"));
                assert!(f.is_finite(), "{v}");
            }
            assert!(!n.contains("NaN") && !n.contains("inf"), "{n}");
        }
    }

    #[test]
    fn html_without_zero_shot_or_linear_layers() {
        let mut r = report();
        r.zero_shot = None;
        r.towers[1].layers.retain(|l| l.own_sqnr_db.is_none());
        r.towers[0].layers.truncate(1);
        let h = render_html(&r);
        assert_eq!(h.matches("<svg").count(), 3);
        assert!(!h.contains("Zero-shot"));
        assert!(!render_text(&r).contains("zero-shot"));
    }
}
