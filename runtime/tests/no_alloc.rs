//! The inference path allocates nothing: a counting global allocator sees zero
//! allocations on this thread while `encode_image` / `encode_text` run, on every kernel
//! set this CPU supports, over artifacts that use every op.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use vlm_runtime::kernels::ALL;
use vlm_runtime::{Model, Session, TowerKind};

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

#[test]
fn encoding_allocates_nothing() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let words: Vec<u32> = bytes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect();
        let aligned = &bytemuck::cast_slice::<u32, u8>(&words)[..bytes.len()];
        let model = Model::from_bytes(aligned).unwrap();
        let mut arena = vec![0u8; model.arena_size()];
        let dim = model.meta.embed_dim;
        let mut out = vec![0.0f32; dim];
        for isa in ALL.into_iter().filter(|i| i.supported()) {
            let mut s = Session::with_isa(&model, &mut arena, isa).unwrap();
            if let Some(t) = model.tower(TowerKind::Vision) {
                let pixels = vec![0.25f32; t.input_len];
                let (r, n) = counted(|| s.encode_image(&pixels, &mut out));
                r.unwrap();
                assert_eq!(n, 0, "encode_image allocated {n} times on {}", isa.name());
                checked += 1;
            }
            if let Some(t) = model.tower(TowerKind::Text) {
                let ids = vec![0u32; t.input_len];
                let (r, n) = counted(|| s.encode_text(&ids, &mut out));
                r.unwrap();
                assert_eq!(n, 0, "encode_text allocated {n} times on {}", isa.name());
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "seed artifacts missing");
    // The counter itself works.
    let (_, n) = counted(|| std::hint::black_box(vec![1u8; 8]));
    assert_eq!(n, 1);
}
