//! The camera QEMU stands in with: an `SpiDevice` that answers the ArduCAM register
//! protocol ([`crate::camera`]) from frames in flash, so the examples run the same driver
//! code under QEMU as on a board.

use embedded_hal::spi::{self, ErrorKind, ErrorType, Operation, SpiDevice};

use crate::camera::reg;

/// A bus transaction the simulated module does not understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimError;

impl spi::Error for SimError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

pub struct SimCamera<'a> {
    frames: &'a [&'a [u8]],
    /// Which frame each capture takes, in order.
    order: &'a [usize],
    captures: usize,
    current: Option<&'a [u8]>,
    fifo_at: usize,
    /// The capture (0-based) whose frame arrives one byte short, to exercise the error
    /// path; `None` for a healthy camera.
    cut_short: Option<usize>,
}

impl<'a> SimCamera<'a> {
    pub fn new(frames: &'a [&'a [u8]], order: &'a [usize]) -> Self {
        SimCamera {
            frames,
            order,
            captures: 0,
            current: None,
            fifo_at: 0,
            cut_short: None,
        }
    }

    /// A camera whose `capture`-th frame (0-based) is one byte short.
    pub fn failing_at(mut self, capture: usize) -> Self {
        self.cut_short = Some(capture);
        self
    }

    fn fifo_len(&self) -> usize {
        match self.current {
            Some(f) if self.cut_short == Some(self.captures - 1) => f.len() - 1,
            Some(f) => f.len(),
            None => 0,
        }
    }

    fn read_reg(&self, r: u8) -> Result<u8, SimError> {
        match r {
            reg::TRIGGER => Ok(if self.current.is_some() {
                reg::CAPTURE_DONE
            } else {
                0
            }),
            _ => match reg::FIFO_SIZE.iter().position(|&x| x == r) {
                Some(i) => Ok((self.fifo_len() >> (8 * i)) as u8),
                None => Err(SimError),
            },
        }
    }
}

impl ErrorType for SimCamera<'_> {
    type Error = SimError;
}

impl SpiDevice for SimCamera<'_> {
    fn transaction(&mut self, ops: &mut [Operation<'_, u8>]) -> Result<(), SimError> {
        match ops {
            [Operation::Write([r, v])] if *r == reg::FIFO_CONTROL | reg::WRITE => {
                match *v {
                    reg::FIFO_CLEAR_DONE => self.current = None,
                    reg::FIFO_START => {
                        // Past the last frame the module never reports done: the
                        // driver times out, as with a sensor that stopped.
                        self.current = self
                            .order
                            .get(self.captures)
                            .and_then(|&i| self.frames.get(i))
                            .copied();
                        self.captures += 1;
                        self.fifo_at = 0;
                    }
                    _ => return Err(SimError),
                }
                Ok(())
            }
            [Operation::Write([r]), Operation::Read(buf)] if *r == reg::BURST_READ => {
                let frame = self.current.ok_or(SimError)?;
                let end = self.fifo_at + buf.len();
                let src = frame.get(self.fifo_at..end).ok_or(SimError)?;
                buf.copy_from_slice(src);
                self.fifo_at = end;
                Ok(())
            }
            [Operation::Write([r]), Operation::Read([v])] => {
                *v = self.read_reg(*r)?;
                Ok(())
            }
            _ => Err(SimError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::{CameraError, SpiCamera};

    #[test]
    fn the_driver_reads_each_frame_in_order_then_times_out() {
        let a = [1u8, 2, 3];
        let b = [4u8, 5, 6];
        let frames: [&[u8]; 2] = [&a, &b];
        let mut cam = SpiCamera::new(SimCamera::new(&frames, &[1, 0, 1]));
        let mut buf = [0u8; 3];
        for want in [b, a, b] {
            cam.capture(&mut buf).unwrap();
            assert_eq!(buf, want);
        }
        assert_eq!(cam.capture(&mut buf), Err(CameraError::Timeout));
    }

    #[test]
    fn a_frame_cut_short_or_of_another_size_is_an_error_not_a_frame() {
        let a = [1u8, 2, 3];
        let frames: [&[u8]; 1] = [&a];
        let mut cam = SpiCamera::new(SimCamera::new(&frames, &[0, 0, 0]).failing_at(1));
        let mut buf = [0u8; 3];
        cam.capture(&mut buf).unwrap();
        assert_eq!(
            cam.capture(&mut buf),
            Err(CameraError::Size {
                got: 2,
                expected: 3
            })
        );
        let mut big = [0u8; 4];
        assert_eq!(
            cam.capture(&mut big),
            Err(CameraError::Size {
                got: 3,
                expected: 4
            })
        );
    }
}
