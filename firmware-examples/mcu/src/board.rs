//! The board side of the examples: the artifact in flash, the static buffers sized from
//! it, the defmt logger (frames on semihosting stdout, decoded on the host), a SysTick
//! clock for per-frame counts, the LED pin and the exit code QEMU returns.

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::{syst::SystClkSource, SCB, SYST};
use cortex_m_rt::exception;
use cortex_m_semihosting::debug;
use defmt::{error, Debug2Format};
use defmt_semihosting as _;
use embedded_hal::spi::SpiDevice;

use crate::camera::SpiCamera;
use crate::classify::{Classifier, Scores};
use crate::sim::SimCamera;

include!(concat!(env!("OUT_DIR"), "/sizes.rs"));

/// The artifact, at the reader's 64-byte alignment.
#[repr(C, align(64))]
struct Aligned<T: ?Sized>(T);

static ARTIFACT: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.vlmq")));

pub fn artifact() -> &'static [u8] {
    &ARTIFACT.0
}

/// Every buffer a frame needs, in RAM (.bss), sized from the artifact at build time.
pub struct Buffers {
    pub arena: &'static mut [u8],
    pub frame: &'static mut [u8],
    pub pixels: &'static mut [f32],
    pub embedding: &'static mut [f32],
}

static TAKEN: AtomicU32 = AtomicU32::new(0);

/// The buffers, once; `None` on a second call.
pub fn buffers() -> Option<Buffers> {
    static mut ARENA: [u8; ARENA_BYTES] = [0; ARENA_BYTES];
    static mut FRAME: [u8; FRAME_BYTES] = [0; FRAME_BYTES];
    static mut PIXELS_BUF: [f32; PIXELS] = [0.0; PIXELS];
    static mut EMBEDDING: [f32; EMBED_DIM] = [0.0; EMBED_DIM];
    if TAKEN.swap(1, Ordering::AcqRel) != 0 {
        return None;
    }
    let (arena, frame, pixels, embedding) = (
        &raw mut ARENA,
        &raw mut FRAME,
        &raw mut PIXELS_BUF,
        &raw mut EMBEDDING,
    );
    // SAFETY: the swap above lets this run once, so these are the only references.
    unsafe {
        Some(Buffers {
            arena: &mut *arena,
            frame: &mut *frame,
            pixels: &mut *pixels,
            embedding: &mut *embedding,
        })
    }
}

static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// SysTick as a 64-bit tick counter at the core clock. QEMU models no DWT cycle
/// counter; under `-icount shift=0` (one instruction per virtual nanosecond) SysTick's
/// ticks count instructions: `ticks × 10⁹ / CLOCK_HZ`. On silicon they are cycles.
pub struct Clock;

impl Clock {
    pub fn start(mut syst: SYST) -> Clock {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(0x00FF_FFFF);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        Clock
    }

    pub fn now(&self) -> u64 {
        cortex_m::interrupt::free(|_| {
            let mut wraps = WRAPS.load(Ordering::Relaxed);
            let mut current = SYST::get_current();
            if SCB::is_pendst_pending() {
                // Wrapped, and the exception has not run yet.
                wraps += 1;
                current = SYST::get_current();
            }
            (u64::from(wraps) << 24) + u64::from(0x0100_0000u32.wrapping_sub(current) & 0x00FF_FFFF)
        })
    }

    /// Instructions in `ticks` when QEMU runs with `-icount shift=0`.
    pub fn instructions(ticks: u64) -> u64 {
        ticks * 1_000_000_000 / CLOCK_HZ.max(1)
    }
}

/// What every example starts with: the SysTick clock, the buffers, and the classifier
/// over the artifact in flash (validated in place). Errors are logged.
pub fn start() -> Result<(Clock, Buffers, Classifier<'static>), Logged> {
    let logged = |what: &str| {
        error!("{=str}", what);
        Logged
    };
    let peripherals =
        cortex_m::Peripherals::take().ok_or_else(|| logged("the core peripherals are taken"))?;
    let buf = buffers().ok_or_else(|| logged("the buffers are taken"))?;
    let classifier = Classifier::new(artifact()).map_err(|e| {
        error!("the artifact in flash: {}", Debug2Format(&e));
        Logged
    })?;
    Ok((Clock::start(peripherals.SYST), buf, classifier))
}

/// The camera QEMU stands in with: the simulated module playing `order` of `frames`.
/// With `forced-failure` on the command line (QEMU's `-append forced-failure`), its
/// third frame arrives one byte short: the error path, exercised without a rebuild.
pub fn camera<'a>(frames: &'a [&'a [u8]], order: &'a [usize]) -> SpiCamera<SimCamera<'a>> {
    let sim = SimCamera::new(frames, order);
    let mut line = [0u8; 256];
    if command_line(&mut line).contains("forced-failure") {
        defmt::warn!("forced failure: the camera's third frame will be one byte short");
        return SpiCamera::new(sim.failing_at(2));
    }
    SpiCamera::new(sim)
}

/// The program's command line through semihosting (`SYS_GET_CMDLINE`): under QEMU the
/// kernel's file name and `-append`'s text; empty where there is none.
pub fn command_line(buf: &mut [u8]) -> &str {
    const SYS_GET_CMDLINE: usize = 0x15;
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    let at = block.as_mut_ptr();
    // SAFETY: SYS_GET_CMDLINE writes at most `block[1]` bytes at `block[0]` (our
    // buffer) and the length it wrote back into `block[1]`; both outlive the call, and
    // the length is read back through the same pointer.
    let (failed, written) = unsafe {
        let failed = cortex_m_semihosting::syscall1(SYS_GET_CMDLINE, at as usize) != 0;
        (failed, core::ptr::read_volatile(at.add(1)))
    };
    let len = if failed { 0 } else { written.min(buf.len()) };
    core::str::from_utf8(&buf[..len]).unwrap_or("")
}

/// An error already logged with defmt: all that is left is to end the run.
#[derive(Debug)]
pub struct Logged;

impl From<Logged> for () {
    fn from(_: Logged) {}
}

/// Captures frame `i` into the frame buffer and classifies it; returns the scores and
/// the SysTick ticks classification took. Errors are logged, naming the frame.
pub fn next_frame<S: SpiDevice>(
    i: usize,
    camera: &mut SpiCamera<S>,
    classifier: &Classifier,
    buf: &mut Buffers,
    clock: &Clock,
) -> Result<(Scores, u64), Logged> {
    camera.capture(buf.frame).map_err(|e| {
        error!("frame {=usize}: camera: {}", i, Debug2Format(&e));
        Logged
    })?;
    let t0 = clock.now();
    let s = classifier
        .classify(buf.frame, buf.pixels, buf.arena, buf.embedding)
        .map_err(|e| {
            error!("frame {=usize}: {}", i, Debug2Format(&e));
            Logged
        })?;
    Ok((s, clock.now() - t0))
}

/// One of the board's user LEDs, as an embedded-hal output pin: a bit of the FPGA
/// I/O block's LED register (MPS2 and MPS3 boards; QEMU models the register).
pub struct LedPin {
    bit: u32,
}

impl LedPin {
    /// LED `bit` (0–7); `None` past the register's LEDs or on a second take.
    pub fn take(bit: u32) -> Option<LedPin> {
        static TAKEN_LEDS: AtomicU32 = AtomicU32::new(0);
        if bit >= 8 || TAKEN_LEDS.fetch_or(1 << bit, Ordering::AcqRel) & (1 << bit) != 0 {
            return None;
        }
        Some(LedPin { bit })
    }

    fn register() -> *mut u32 {
        LED_REGISTER as *mut u32
    }

    fn set(&mut self, on: bool) {
        // SAFETY: LED_REGISTER is the board's LED register (from its profile), a plain
        // read-write word; the interrupt-free section keeps read-modify-write whole.
        cortex_m::interrupt::free(|_| unsafe {
            let v = core::ptr::read_volatile(Self::register());
            let v = if on {
                v | 1 << self.bit
            } else {
                v & !(1 << self.bit)
            };
            core::ptr::write_volatile(Self::register(), v);
        });
    }
}

impl embedded_hal::digital::ErrorType for LedPin {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::OutputPin for LedPin {
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.set(true);
        Ok(())
    }

    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.set(false);
        Ok(())
    }
}

impl embedded_hal::digital::StatefulOutputPin for LedPin {
    fn is_set_high(&mut self) -> Result<bool, Self::Error> {
        // SAFETY: as in `set`.
        let v = unsafe { core::ptr::read_volatile(Self::register()) };
        Ok(v & 1 << self.bit != 0)
    }

    fn is_set_low(&mut self) -> Result<bool, Self::Error> {
        self.is_set_high().map(|h| !h)
    }
}

/// Ends the program: exit status 0 when `result` is `Ok`, 1 otherwise (its error was
/// logged where it happened).
pub fn finish(result: Result<(), ()>) -> ! {
    exit(u32::from(result.is_err()))
}

/// Ends the program with `code` as QEMU's exit status (semihosting
/// `SYS_EXIT_EXTENDED`); on a board without a debugger attached it halts instead.
pub fn exit(code: u32) -> ! {
    if code == 0 {
        debug::exit(debug::EXIT_SUCCESS);
    } else {
        // ADP_Stopped_ApplicationExit with the code itself.
        let block = [0x2_0026u32, code];
        // SAFETY: SYS_EXIT_EXTENDED reads the two words of `block`.
        unsafe { cortex_m_semihosting::syscall(0x20, &block) };
    }
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    defmt::error!("panic: {}", defmt::Display2Format(info));
    exit(101)
}
