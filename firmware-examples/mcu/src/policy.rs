//! A moderation policy over a camera stream: a frame is a hit when a watched label's
//! probability (SigLIP's sigmoid: each label on its own, so the threshold means the same
//! whatever the other labels are) reaches its threshold; the stream is flagged after
//! enough hits in a row and cleared after enough quiet frames in a row, with a lower
//! threshold to clear than to flag, so one noisy frame neither raises nor drops the flag.
//! Changes go into a `heapless` queue for whoever acts on them (an output pin, a radio).

use heapless::Deque;

/// One watched label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub label: usize,
    /// A frame at or above this probability is a hit.
    pub flag_at: f32,
    /// A frame below this probability is quiet; between the two it is neither and
    /// leaves both counts where they were.
    pub clear_below: f32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy<const RULES: usize> {
    pub rules: [Rule; RULES],
    /// Hits in a row that raise the flag.
    pub hits_to_flag: u8,
    /// Quiet frames in a row that clear it.
    pub quiet_to_clear: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Flagged,
    Cleared,
}

/// A change of the stream's state, with the frame that caused it and the rule that hit
/// (for `Cleared`, the last rule that had hit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    pub frame: u32,
    pub change: Change,
    pub label: usize,
    pub probability: f32,
}

/// The queue is full: the consumer has fallen behind. The event is dropped and counted,
/// never blocks the camera loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

pub struct Moderator<const RULES: usize, const QUEUE: usize> {
    policy: Policy<RULES>,
    flagged: bool,
    hits: u8,
    quiet: u8,
    last_rule: usize,
    frame: u32,
    pub events: Deque<Event, QUEUE>,
    pub dropped: u32,
}

impl<const RULES: usize, const QUEUE: usize> Moderator<RULES, QUEUE> {
    pub fn new(policy: Policy<RULES>) -> Self {
        Moderator {
            policy,
            flagged: false,
            hits: 0,
            quiet: 0,
            last_rule: 0,
            frame: 0,
            events: Deque::new(),
            dropped: 0,
        }
    }

    pub fn flagged(&self) -> bool {
        self.flagged
    }

    /// Takes one frame's probabilities (indexed by label); returns the change it caused,
    /// which is also queued.
    pub fn observe(&mut self, probs: &[f32]) -> Option<Event> {
        let frame = self.frame;
        self.frame += 1;
        let p = |r: &Rule| probs.get(r.label).copied().unwrap_or(0.0);
        // The strongest hit, if any; NaN is never a hit.
        let hit = self
            .policy
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| p(r) >= r.flag_at)
            .fold(None, |best: Option<(usize, f32)>, (i, r)| match best {
                Some((_, q)) if q >= p(r) => best,
                _ => Some((i, p(r))),
            });
        let quiet = self
            .policy
            .rules
            .iter()
            .all(|r| p(r) < r.clear_below || p(r).is_nan());
        if let Some((i, _)) = hit {
            self.last_rule = i;
            self.hits = self.hits.saturating_add(1);
            self.quiet = 0;
        } else if quiet {
            self.quiet = self.quiet.saturating_add(1);
            self.hits = 0;
        }
        let change = if !self.flagged && self.hits >= self.policy.hits_to_flag {
            Change::Flagged
        } else if self.flagged && self.quiet >= self.policy.quiet_to_clear {
            Change::Cleared
        } else {
            return None;
        };
        self.flagged = change == Change::Flagged;
        let rule = self.policy.rules[self.last_rule];
        let event = Event {
            frame,
            change,
            label: rule.label,
            probability: p(&rule),
        };
        if self.events.push_back(event).is_err() {
            self.dropped += 1;
        }
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moderator() -> Moderator<1, 4> {
        Moderator::new(Policy {
            rules: [Rule {
                label: 1,
                flag_at: 0.5,
                clear_below: 0.3,
            }],
            hits_to_flag: 2,
            quiet_to_clear: 2,
        })
    }

    fn run(m: &mut Moderator<1, 4>, ps: &[f32]) -> [bool; 16] {
        let mut out = [false; 16];
        for (o, &p) in out.iter_mut().zip(ps) {
            m.observe(&[0.0, p]);
            *o = m.flagged();
        }
        out
    }

    #[test]
    fn one_hit_does_not_flag_two_in_a_row_do() {
        let mut m = moderator();
        let f = run(&mut m, &[0.9, 0.1, 0.9, 0.1, 0.9, 0.6]);
        assert_eq!(f[..6], [false, false, false, false, false, true]);
        assert_eq!(m.events.len(), 1);
        let e = m.events.pop_front().unwrap();
        assert_eq!((e.frame, e.change, e.label), (5, Change::Flagged, 1));
    }

    #[test]
    fn clearing_needs_quiet_frames_in_a_row_and_the_band_between_holds() {
        let mut m = moderator();
        // Flagged at 1; 0.4 is between the thresholds (neither); one quiet frame, then a
        // hit resets the quiet count; two quiet frames clear at 6.
        let f = run(&mut m, &[0.8, 0.8, 0.4, 0.2, 0.7, 0.2, 0.1, 0.4]);
        assert_eq!(f[..8], [false, true, true, true, true, true, false, false]);
        let changes: heapless::Vec<(u32, Change), 4> =
            m.events.iter().map(|e| (e.frame, e.change)).collect();
        assert_eq!(&changes[..], &[(1, Change::Flagged), (6, Change::Cleared)]);
    }

    #[test]
    fn nan_and_missing_labels_are_never_hits_and_a_full_queue_drops_and_counts() {
        let mut m: Moderator<1, 1> = Moderator::new(moderator().policy);
        for _ in 0..4 {
            m.observe(&[0.0, f32::NAN]);
            m.observe(&[0.0]);
        }
        assert!(!m.flagged() && m.events.is_empty());
        for p in [0.9, 0.9, 0.0, 0.0, 0.9, 0.9] {
            m.observe(&[0.0, p]);
        }
        assert!(m.flagged());
        assert_eq!((m.events.len(), m.dropped), (1, 2));
    }
}
