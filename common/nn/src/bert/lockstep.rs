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
use crate::compare::{Ensure, Refresh};
use crate::engine::Engine;
use crate::error::{invalid, NnError};
use crate::newton::Refresher;
use nexus_ckks::Ciphertext;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// A ciphertext offered for bootstrapping: (ciphertext, levels needed,
/// bound on its values).
type Offer = (Ciphertext, usize, f64);

/// How an offered ciphertext is bootstrapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Divided by a power of two bounding it first and multiplied back
    /// after (the encoder's [`Refresher`]).
    Scaled,
    /// As it is, when fewer than the needed levels are left (the
    /// comparisons' [`Ensure`]: their values are small).
    Direct,
}

/// What a lane leaves at the meeting.
type Request = (Offer, Kind);

/// Where two lanes meet to bootstrap together.
#[derive(Debug, Default)]
struct Meeting {
    state: Mutex<MeetingState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct MeetingState {
    /// A lane's ciphertext waiting for its partner's.
    offers: [Option<Request>; 2],
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
    /// The engine the bootstraps run on.
    pub fn engine(&self) -> &'a Engine<'a> {
        self.engine
    }

    /// Bootstraps on their own.
    pub fn new(engine: &'a Engine<'a>, refresh: &'a Refresh<'a>) -> Self {
        Self { engine, refresh, lane: None, seconds: 0.0, count: 0 }
    }

    fn alone(&mut self, ((ct, needed, bound), kind): Request) -> Result<Ciphertext, NnError> {
        self.count += 1;
        match kind {
            Kind::Scaled => refresh_scaled(self.engine, self.refresh, ct, needed, bound),
            Kind::Direct => {
                let mut refresh = *self.refresh;
                refresh.ensure(self.engine, ct, needed)
            }
        }
    }

    /// Both lanes' requests, the first lane's first, through one
    /// bootstrap (two if they differ in kind: the lanes are out of step).
    fn both(&mut self, first: Request, second: Request) -> Result<(Ciphertext, Ciphertext), NnError> {
        match (first, second) {
            ((a, Kind::Scaled), (b, Kind::Scaled)) => {
                self.count += 1;
                refresh_scaled_pair(self.engine, self.refresh, a, b)
            }
            (((a, needed_a, _), Kind::Direct), ((b, needed_b, _), Kind::Direct)) => {
                self.count += 1;
                self.refresh.check_provides(needed_a.max(needed_b))?;
                let (bootstrapper, keys) = (self.refresh.bootstrapper, self.refresh.keys);
                Ok(bootstrapper.bootstrap_real_pair_times(self.engine.eval, (&a, 1.0), (&b, 1.0), keys)?)
            }
            (first, second) => Ok((self.alone(first)?, self.alone(second)?)),
        }
    }

    /// Offers `request` to the partner lane: runs the pair if the partner
    /// is waiting, else waits for it to run it.
    fn meet(&mut self, meeting: &Meeting, lane: usize, request: Request) -> Result<Ciphertext, NnError> {
        let other = 1 - lane;
        let mut s = meeting.lock()?;
        if s.finished[other] {
            drop(s);
            return self.alone(request);
        }
        if let Some(theirs) = s.offers[other].take() {
            drop(s);
            let (first, second) = if lane == 0 { (request, theirs) } else { (theirs, request) };
            let pair = self.both(first, second);
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
        s.offers[lane] = Some(request);
        meeting.changed.notify_all();
        loop {
            if let Some(result) = s.results[lane].take() {
                return result.map_err(|m| invalid("lockstep", format!("the paired bootstrap failed: {m}")));
            }
            if s.finished[other] {
                // The partner stopped without taking the offer: bootstrap
                // alone. Taken but no result: it stopped mid-bootstrap.
                let Some(request) = s.offers[lane].take() else {
                    return Err(invalid("lockstep", "the other lane stopped during a paired bootstrap"));
                };
                drop(s);
                return self.alone(request);
            }
            s = meeting.changed.wait(s).map_err(|_| invalid("lockstep", "the other lane panicked"))?;
        }
    }

    /// `request` bootstrapped, with the partner lane's if there is one.
    fn bootstrap(&mut self, request: Request) -> Result<Ciphertext, NnError> {
        trace(self.lane.map(|(_, l)| l), "one", &[(&request.0 .0, request.0 .1)]);
        let start = Instant::now();
        let out = match self.lane {
            Some((meeting, lane)) => self.meet(meeting, lane, request),
            None => self.alone(request),
        };
        self.seconds += start.elapsed().as_secs_f64();
        out
    }
}

impl Refresher for Bootstraps<'_> {
    fn refresh(&mut self, ct: Ciphertext, needed: usize, bound: f64) -> Result<Ciphertext, NnError> {
        if !needs_bootstrap(&ct, needed) {
            return Ok(ct);
        }
        self.bootstrap(((ct, needed, bound), Kind::Scaled))
    }

    /// Two ciphertexts of one lane that both need a bootstrap share one
    /// (the partner lane does the same at the same point); one alone meets
    /// the partner's.
    fn refresh_pair(&mut self, a: Offer, b: Offer) -> Result<(Ciphertext, Ciphertext), NnError> {
        if !(needs_bootstrap(&a.0, a.1) && needs_bootstrap(&b.0, b.1)) {
            return Ok((self.refresh(a.0, a.1, a.2)?, self.refresh(b.0, b.1, b.2)?));
        }
        trace(self.lane.map(|(_, l)| l), "pair", &[(&a.0, a.1), (&b.0, b.1)]);
        let start = Instant::now();
        let out = refresh_scaled_pair(self.engine, self.refresh, a, b)?;
        self.seconds += start.elapsed().as_secs_f64();
        self.count += 1;
        Ok(out)
    }
}

impl Ensure for Bootstraps<'_> {
    /// The comparisons' plain bootstrap (the classification head), paired
    /// like the encoder's.
    fn ensure(&mut self, _engine: &Engine<'_>, ct: Ciphertext, needed: usize) -> Result<Ciphertext, NnError> {
        if ct.level() >= needed {
            return Ok(ct);
        }
        self.bootstrap(((ct, needed, 1.0), Kind::Direct))
    }
}

/// With `NEXUS_TRACE_BOOTSTRAPS` set, one line per bootstrap on stderr:
/// the lane, one ciphertext or a pair of one lane, and each ciphertext's
/// level and the levels its next stage asked for (where the circuit
/// spends its bootstraps).
fn trace(lane: Option<usize>, what: &str, cts: &[(&Ciphertext, usize)]) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*ON.get_or_init(|| std::env::var_os("NEXUS_TRACE_BOOTSTRAPS").is_some()) {
        return;
    }
    let cts: Vec<String> = cts.iter().map(|(ct, needed)| format!("level {} needs {needed}", ct.level())).collect();
    eprintln!("bootstrap lane {}: {what}: {}", lane.map_or("-".to_string(), |l| l.to_string()), cts.join(", "));
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
