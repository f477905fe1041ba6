//! Zero-shot classification on a Cortex-M: frames from an SPI camera (in QEMU, the
//! simulated one streaming the shipped frames), the int8 image tower from flash, each
//! frame scored against the label embeddings stored in the artifact; label, probability
//! and the embedding's hash logged with defmt. Exits 0 when every frame was classified,
//! non-zero on the first error.
#![no_std]
#![no_main]

use defmt::info;
use vlm_firmware::board::{self, Clock};
use vlm_firmware::FRAMES;

#[cortex_m_rt::entry]
fn main() -> ! {
    board::finish(run())
}

fn run() -> Result<(), ()> {
    let (clock, mut buf, classifier) = board::start()?;
    let labels = classifier.labels();
    info!(
        "board {=str}: kernels {=str}, model {=usize} bytes in flash, arena {=usize} bytes, {=usize} labels, core clock {=u64} Hz",
        board::BOARD,
        vlm_runtime::kernels::Isa::detect().name(),
        board::artifact().len(),
        buf.arena.len(),
        labels.count,
        board::CLOCK_HZ
    );
    let frames = vlm_firmware::shipped_frames().ok_or(())?;
    let order: [usize; FRAMES.len()] = core::array::from_fn(|i| i);
    let mut camera = board::camera(&frames, &order);
    for i in 0..order.len() {
        let (s, ticks) = board::next_frame(i, &mut camera, &classifier, &mut buf, &clock)?;
        let p = s.probability(s.best);
        info!(
            "frame {=usize}: {=str} p={=f32} bits={=u32:#010x} embedding={=u64:#018x} ticks={=u64} instructions={=u64}",
            i,
            labels.name(s.best),
            p,
            p.to_bits(),
            s.embedding_hash,
            ticks,
            Clock::instructions(ticks)
        );
    }
    info!("done: {=usize} frames", order.len());
    Ok(())
}
