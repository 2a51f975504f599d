//! Two lanes in lockstep: two encoders of the same shape (throughput
//! batches of the same layout) run on two threads, and every bootstrap one
//! lane needs, the other needs at the same point of the same circuit (the
//! levels do not depend on the data). The two ciphertexts then go through
//! one complex bootstrap (`a + i b`), which costs about what one real
//! bootstrap costs: bootstraps are most of a layer's time, so a second
//! batch comes at a fraction of the first's price.
//!
//! A lane whose partner has stopped (finished, failed or out of step)
//! bootstraps alone, so nothing waits forever.

use super::encrypted::{needs_bootstrap, refresh_scaled, refresh_scaled_pair};
use crate::compare::Refresh;
use crate::engine::Engine;
use crate::error::{invalid, NnError};
use crate::newton::Refresher;
use nexus_ckks::Ciphertext;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// A ciphertext offered for bootstrapping: (ciphertext, levels needed,
/// bound on its values).
type Offer = (Ciphertext, usize, f64);

/// Where two lanes meet to bootstrap together.
#[derive(Debug, Default)]
struct Meeting {
    state: Mutex<MeetingState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct MeetingState {
    /// A lane's ciphertext waiting for its partner's.
    offers: [Option<Offer>; 2],
    /// A waiting lane's result, left by the partner that ran the pair.
    results: [Option<Result<Ciphertext, String>>; 2],
    /// Lanes that will offer nothing more.
    finished: [bool; 2],
}

impl Meeting {
    fn lock(&self) -> Result<MutexGuard<'_, MeetingState>, NnError> {
        self.state.lock().map_err(|_| invalid("lockstep", "the other lane panicked"))
    }

    fn finish(&self, lane: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.finished[lane] = true;
        }
        self.changed.notify_all();
    }
}

/// Marks a lane finished when its work ends, however it ends.
struct Finished<'m> {
    meeting: &'m Meeting,
    lane: usize,
}

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.meeting.finish(self.lane);
    }
}

/// Scaled bootstraps (see [`refresh_scaled`]) with their count and wall
/// time; in a lane, paired with the other lane's.
#[derive(Debug)]
pub struct Bootstraps<'a> {
    pub(crate) engine: &'a Engine<'a>,
    refresh: &'a Refresh<'a>,
    lane: Option<(&'a Meeting, usize)>,
    /// Seconds spent bootstrapping (in a lane: including the wait for
    /// the partner).
    pub seconds: f64,
    /// Bootstraps this lane ran (a paired one counts for the lane that
    /// ran it).
    pub count: usize,
}

impl<'a> Bootstraps<'a> {
    /// Bootstraps on their own.
    pub fn new(engine: &'a Engine<'a>, refresh: &'a Refresh<'a>) -> Self {
        Self { engine, refresh, lane: None, seconds: 0.0, count: 0 }
    }

    fn alone(&mut self, (ct, needed, bound): Offer) -> Result<Ciphertext, NnError> {
        self.count += 1;
        refresh_scaled(self.engine, self.refresh, ct, needed, bound)
    }

    /// Offers `offer` to the partner lane: runs the pair if the partner is
    /// waiting, else waits for it to run it.
    fn meet(&mut self, meeting: &Meeting, lane: usize, offer: Offer) -> Result<Ciphertext, NnError> {
        let other = 1 - lane;
        let mut s = meeting.lock()?;
        if s.finished[other] {
            drop(s);
            return self.alone(offer);
        }
        if let Some(theirs) = s.offers[other].take() {
            drop(s);
            self.count += 1;
            let (first, second) = if lane == 0 { (offer, theirs) } else { (theirs, offer) };
            let pair = refresh_scaled_pair(self.engine, self.refresh, first, second);
            let mut s = meeting.lock()?;
            let mine = match pair {
                Ok((a, b)) => {
                    let (mine, theirs) = if lane == 0 { (a, b) } else { (b, a) };
                    s.results[other] = Some(Ok(theirs));
                    Ok(mine)
                }
                Err(e) => {
                    s.results[other] = Some(Err(e.to_string()));
                    Err(e)
                }
            };
            drop(s);
            meeting.changed.notify_all();
            return mine;
        }
        s.offers[lane] = Some(offer);
        meeting.changed.notify_all();
        loop {
            if let Some(result) = s.results[lane].take() {
                return result.map_err(|m| invalid("lockstep", format!("the paired bootstrap failed: {m}")));
            }
            if s.finished[other] {
                // The partner stopped without taking the offer: bootstrap
                // alone. Taken but no result: it stopped mid-bootstrap.
                let Some(offer) = s.offers[lane].take() else {
                    return Err(invalid("lockstep", "the other lane stopped during a paired bootstrap"));
                };
                drop(s);
                return self.alone(offer);
            }
            s = meeting.changed.wait(s).map_err(|_| invalid("lockstep", "the other lane panicked"))?;
        }
    }
}

impl Refresher for Bootstraps<'_> {
    fn refresh(&mut self, ct: Ciphertext, needed: usize, bound: f64) -> Result<Ciphertext, NnError> {
        if !needs_bootstrap(&ct, needed) {
            return Ok(ct);
        }
        let start = Instant::now();
        let out = match self.lane {
            Some((meeting, lane)) => self.meet(meeting, lane, (ct, needed, bound)),
            None => self.alone((ct, needed, bound)),
        };
        self.seconds += start.elapsed().as_secs_f64();
        out
    }

    /// Two ciphertexts of one lane that both need a bootstrap share one
    /// (the partner lane does the same at the same point); one alone meets
    /// the partner's.
    fn refresh_pair(&mut self, a: Offer, b: Offer) -> Result<(Ciphertext, Ciphertext), NnError> {
        if !(needs_bootstrap(&a.0, a.1) && needs_bootstrap(&b.0, b.1)) {
            return Ok((self.refresh(a.0, a.1, a.2)?, self.refresh(b.0, b.1, b.2)?));
        }
        let start = Instant::now();
        let out = refresh_scaled_pair(self.engine, self.refresh, a, b)?;
        self.seconds += start.elapsed().as_secs_f64();
        self.count += 1;
        Ok(out)
    }
}

/// Runs `first` and `second` on two threads with their bootstraps paired
/// (each closure reads its lane's bootstrap seconds and count from the
/// [`Bootstraps`] it is given).
pub fn lockstep<'a, A: Send, B: Send>(
    engine: &'a Engine<'a>,
    refresh: &'a Refresh<'a>,
    first: impl FnOnce(&mut Bootstraps<'_>) -> Result<A, NnError> + Send,
    second: impl FnOnce(&mut Bootstraps<'_>) -> Result<B, NnError> + Send,
) -> Result<(A, B), NnError> {
    let meeting = Meeting::default();
    let lane = |index: usize| Bootstraps { engine, refresh, lane: Some((&meeting, index)), seconds: 0.0, count: 0 };
    let (a, b) = std::thread::scope(|scope| {
        let (meeting, mut lane_b) = (&meeting, lane(1));
        let b = scope.spawn(move || {
            let _done = Finished { meeting, lane: 1 };
            second(&mut lane_b)
        });
        let a = {
            let _done = Finished { meeting, lane: 0 };
            first(&mut lane(0))
        };
        let b = b.join().map_err(|_| invalid("lockstep", "the second lane panicked"));
        (a, b)
    });
    Ok((a?, b??))
}
