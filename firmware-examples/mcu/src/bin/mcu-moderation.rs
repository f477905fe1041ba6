//! Moderation on a Cortex-M camera stream: the zero-shot classifier of `mcu-zero-shot`
//! with a policy (a watched label, a threshold to flag and a lower one to clear,
//! hysteresis over consecutive frames) that drives an embedded-hal output pin (a board
//! LED) while the stream is flagged; changes go through a `heapless` queue to the code
//! that acts on them. Exits 0 after the shipped sequence, non-zero on any error.
#![no_std]
#![no_main]

use defmt::{error, info};
use embedded_hal::digital::{OutputPin, StatefulOutputPin};
use vlm_firmware::board::{self, LedPin};
use vlm_firmware::policy::{Change, Moderator, Policy, Rule};

/// The watched label, as the artifact stores it.
const WATCHED: &str = "a blue star";
/// The stream the simulated camera plays: a lone hit, then a run, one quiet frame, a hit
/// that keeps the flag, two quiet frames that clear it (indices into `FRAMES`).
const SEQUENCE: [usize; 10] = [0, 4, 0, 4, 6, 7, 1, 4, 2, 5];

#[cortex_m_rt::entry]
fn main() -> ! {
    board::finish(run())
}

fn run() -> Result<(), ()> {
    let (clock, mut buf, classifier) = board::start()?;
    let mut pin = LedPin::take(0).ok_or(())?;
    let _ = pin.set_low();
    let labels = classifier.labels();
    let watched = (0..labels.count)
        .find(|&i| labels.name(i) == WATCHED)
        .ok_or_else(|| error!("the artifact stores no label {=str}", WATCHED))?;
    let mut moderator: Moderator<1, 4> = Moderator::new(Policy {
        rules: [Rule {
            label: watched,
            flag_at: 0.5,
            clear_below: 0.3,
        }],
        hits_to_flag: 2,
        quiet_to_clear: 2,
    });
    info!(
        "board {=str}: kernels {=str}, watching {=str} (flag at p >= 0.5 on 2 frames in a row, clear below 0.3 on 2)",
        board::BOARD,
        vlm_runtime::kernels::Isa::detect().name(),
        WATCHED
    );
    let frames = vlm_firmware::shipped_frames().ok_or(())?;
    let mut camera = board::camera(&frames, &SEQUENCE);
    for i in 0..SEQUENCE.len() {
        let (s, ticks) = board::next_frame(i, &mut camera, &classifier, &mut buf, &clock)?;
        moderator.observe(&s.probs[..s.labels]);
        // The consumer: drains the queue and drives the pin.
        while let Some(e) = moderator.events.pop_front() {
            let _ = match e.change {
                Change::Flagged => pin.set_high(),
                Change::Cleared => pin.set_low(),
            };
            info!(
                "event frame {=u32}: {=str} ({=str} p={=f32})",
                e.frame,
                match e.change {
                    Change::Flagged => "flagged",
                    Change::Cleared => "cleared",
                },
                labels.name(e.label),
                e.probability
            );
        }
        let p = s.probability(watched);
        info!(
            "frame {=usize}: {=str} p={=f32} bits={=u32:#010x} embedding={=u64:#018x} pin={=bool} ticks={=u64}",
            i,
            labels.name(watched),
            p,
            p.to_bits(),
            s.embedding_hash,
            pin.is_set_high().unwrap_or(false),
            ticks
        );
    }
    if moderator.dropped != 0 {
        error!("{=u32} events dropped", moderator.dropped);
        return Err(());
    }
    info!("done: {=usize} frames", SEQUENCE.len());
    Ok(())
}
