//! A driver for an SPI camera module, written against embedded-hal 1.0's `SpiDevice` so
//! it runs on any HAL (and on the simulated camera in QEMU).
//!
//! The protocol is the ArduCAM Mini's, the common SPI camera module for MCUs: register
//! writes set bit 7 of the address; capture is started through the FIFO control register
//! and polled on the trigger register's done bit; the FIFO length is three registers, low
//! byte first; one burst read streams the frame. Frames are taken as RGB888 at the
//! model's input size: on a real module the sensor is set to that size and format (or its
//! RGB565 expanded) before this driver sees a byte.

use embedded_hal::spi::{Operation, SpiDevice};

/// Register addresses and bits (ArduCAM Mini).
pub mod reg {
    pub const WRITE: u8 = 0x80;
    pub const FIFO_CONTROL: u8 = 0x04;
    pub const FIFO_CLEAR_DONE: u8 = 0x01;
    pub const FIFO_START: u8 = 0x02;
    pub const TRIGGER: u8 = 0x41;
    pub const CAPTURE_DONE: u8 = 0x08;
    pub const FIFO_SIZE: [u8; 3] = [0x42, 0x43, 0x44];
    pub const BURST_READ: u8 = 0x3C;
}

/// Why a frame could not be captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraError<E> {
    /// The bus failed.
    Spi(E),
    /// The capture did not finish within the polling budget.
    Timeout,
    /// The module holds a frame of another size than the one asked for: a sensor set to
    /// another resolution, or a frame cut short.
    Size { got: usize, expected: usize },
}

impl<E> From<E> for CameraError<E> {
    fn from(e: E) -> Self {
        CameraError::Spi(e)
    }
}

pub struct SpiCamera<S> {
    spi: S,
    /// Status reads before a capture counts as timed out.
    max_polls: u32,
}

impl<S: SpiDevice> SpiCamera<S> {
    pub fn new(spi: S) -> Self {
        SpiCamera {
            spi,
            max_polls: 100_000,
        }
    }

    /// Captures one frame into `frame`, which must be exactly the frame's size.
    pub fn capture(&mut self, frame: &mut [u8]) -> Result<(), CameraError<S::Error>> {
        self.write_reg(reg::FIFO_CONTROL, reg::FIFO_CLEAR_DONE)?;
        self.write_reg(reg::FIFO_CONTROL, reg::FIFO_START)?;
        let mut polls = 0;
        while self.read_reg(reg::TRIGGER)? & reg::CAPTURE_DONE == 0 {
            polls += 1;
            if polls >= self.max_polls {
                return Err(CameraError::Timeout);
            }
        }
        let mut got = 0usize;
        for (i, r) in reg::FIFO_SIZE.iter().enumerate() {
            got |= usize::from(self.read_reg(*r)?) << (8 * i);
        }
        if got != frame.len() {
            return Err(CameraError::Size {
                got,
                expected: frame.len(),
            });
        }
        self.spi
            .transaction(&mut [Operation::Write(&[reg::BURST_READ]), Operation::Read(frame)])?;
        Ok(())
    }

    /// The bus back, for a caller that shares it.
    pub fn release(self) -> S {
        self.spi
    }

    fn write_reg(&mut self, r: u8, v: u8) -> Result<(), S::Error> {
        self.spi.write(&[r | reg::WRITE, v])
    }

    fn read_reg(&mut self, r: u8) -> Result<u8, S::Error> {
        let mut v = [0u8];
        self.spi
            .transaction(&mut [Operation::Write(&[r]), Operation::Read(&mut v)])?;
        Ok(v[0])
    }
}
