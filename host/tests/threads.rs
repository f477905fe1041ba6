//! One loaded model, many threads: four threads at once, each with its own session (its
//! own arena), embed the same images and texts and get exactly the single-threaded
//! results, whatever order they run in.

use std::path::PathBuf;

use vlm_host::Model;

fn images() -> Vec<PathBuf> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/demo/examples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    assert!(v.len() >= 2, "the demo's example images are missing");
    v
}

const TEXTS: [&str; 3] = ["a red circle", "two blue stars", "a green heart"];

#[test]
fn one_model_serves_four_threads_with_identical_results() {
    let model: Model = vlm_host::demo::model().unwrap();
    let images = images();
    let want_images: Vec<Vec<f32>> = images
        .iter()
        .map(|p| model.embed_image(p).unwrap())
        .collect();
    let want_texts: Vec<Vec<f32>> = TEXTS.iter().map(|t| model.embed_text(t).unwrap()).collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (model, images) = (&model, &images);
            let (want_images, want_texts) = (&want_images, &want_texts);
            s.spawn(move || {
                for round in 0..3 {
                    // Each thread walks the inputs from a different start.
                    for i in 0..images.len() {
                        let i = (i + t + round) % images.len();
                        let got = model.embed_image(&images[i]).unwrap();
                        assert_eq!(got, want_images[i], "thread {t}: {}", images[i].display());
                    }
                    let i = (t + round) % TEXTS.len();
                    assert_eq!(model.embed_text(TEXTS[i]).unwrap(), want_texts[i]);
                }
            });
        }
    });
}

#[test]
fn runtime_sessions_share_one_validated_model() {
    // The layer below: one `vlm_runtime::Model` (borrowed bytes, validated once) and a
    // `Session` per thread over the thread's own arena.
    let host = vlm_host::demo::model().unwrap();
    let model = host.runtime();
    let g = model.graph_index(vlm_runtime::Role::ImageEncoder).unwrap();
    let input_len = model.graph_at(g).unwrap().inputs().next().unwrap().len();
    let out_len = model.graph_at(g).unwrap().outputs().next().unwrap().len();
    let pixels: Vec<Vec<f32>> = (0..4)
        .map(|t| {
            (0..input_len)
                .map(|i| ((i * 7 + t * 13) % 255) as f32 / 127.5 - 1.0)
                .collect()
        })
        .collect();
    let run = |p: &[f32]| {
        let mut arena = vec![0u8; model.arena_size()];
        let mut session = vlm_runtime::Session::new(model, &mut arena).unwrap();
        let mut out = vec![0.0f32; out_len];
        session
            .run(g, &[vlm_runtime::Input::F32(p)], &mut [&mut out], None)
            .unwrap();
        out
    };
    let want: Vec<Vec<f32>> = pixels.iter().map(|p| run(p)).collect();
    std::thread::scope(|s| {
        let (run, pixels) = (&run, &pixels);
        let handles: Vec<_> = (0..4).map(|t| s.spawn(move || run(&pixels[t]))).collect();
        for (t, h) in handles.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), want[t], "thread {t}");
        }
    });
}
