//! The inference path allocates nothing: a counting global allocator sees zero
//! allocations on this thread while `Session::run` runs every graph of every seed
//! artifact (encoders once, a decoder for several steps over its KV cache, then again
//! after `reset_state`), on every kernel set this CPU supports, over artifacts that use
//! every op.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use vlm_runtime::kernels::ALL;
use vlm_runtime::model::DType;
use vlm_runtime::{Input, Model, Session};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` and no destructor: reading it never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, ALLOCATIONS.load(Ordering::SeqCst) - before)
}

/// Decoder steps per run: fewer than the seed decoder's cache holds (6), so every step
/// succeeds, and enough that attention reads several cached positions.
const STEPS: usize = 4;

#[test]
fn running_graphs_allocates_nothing() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "vlmq"))
        .collect();
    paths.sort();
    let (mut checked, mut stateful) = (0, 0);
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let words: Vec<u32> = bytes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect();
        let aligned = &bytemuck::cast_slice::<u32, u8>(&words)[..bytes.len()];
        let model = Model::from_bytes(aligned).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut arena = vec![0u8; model.arena_size()];
        for isa in ALL.into_iter().filter(|i| i.supported()) {
            let mut s = Session::with_isa(&model, &mut arena, isa).unwrap();
            for (g, graph) in model.graphs().enumerate() {
                // Everything the run needs is made before counting starts: f32 ports get
                // a constant pixel vector, u32 ports token id 0 (in every vocabulary).
                let inputs: Vec<(Vec<f32>, Vec<u32>, DType)> = graph
                    .inputs()
                    .map(|p| (vec![0.25f32; p.len()], vec![0u32; p.len()], p.dtype))
                    .collect();
                let inputs: Vec<Input> = inputs
                    .iter()
                    .map(|(f, u, dtype)| match dtype {
                        DType::U32 => Input::U32(u),
                        _ => Input::F32(f),
                    })
                    .collect();
                let mut outs: Vec<Vec<f32>> =
                    graph.outputs().map(|p| vec![0.0f32; p.len()]).collect();
                let mut outs: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
                let decoder = graph.states().next().is_some();
                let steps = if decoder { STEPS } else { 2 };
                let what = format!("{name}, graph {g} ({}), {}", graph.role.name(), isa.name());
                let (r, n) = counted(|| -> Result<(), vlm_runtime::Error> {
                    for _ in 0..steps {
                        s.run(g, &inputs, &mut outs, None)?;
                    }
                    // A new sequence: the state is zeroed and the first step runs again.
                    s.reset_state().unwrap();
                    s.run(g, &inputs, &mut outs, None)
                });
                r.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(n, 0, "{what}: {steps} runs allocated {n} times");
                assert!(
                    outs.iter().all(|o| o.iter().all(|v| v.is_finite())),
                    "{what}: non-finite output"
                );
                checked += 1;
                stateful += decoder as usize;
            }
        }
    }
    assert!(
        checked >= 7,
        "seed artifacts missing: {checked} graphs checked"
    );
    assert!(stateful > 0, "no graph with state (a decoder) was checked");
    // The counter itself works.
    let (_, n) = counted(|| std::hint::black_box(vec![1u8; 8]));
    assert_eq!(n, 1);
}
