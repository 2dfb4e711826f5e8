//! The order of a data call, once for every front end.
//!
//! [`serve`] takes a call from the moment its front end has it to the moment its answer is
//! handed to the wire, in one order whatever the protocol:
//!
//! 1. the clock starts (the call's duration and its gateway/source split start here);
//! 2. the dataset is looked up (an unknown id is answered without a record or a count);
//! 3. on conditional data a [`Recorder`] is made, so that every refusal from here on is recorded;
//! 4. the front end checks its request ([`FrontEnd::check`]), then the answer memory budget
//!    admits the call ([`crate::answers`]) and the key names its caller;
//! 5. only then is there a [`Call`], from which the front end grants, plans and starts the query
//!    and encodes it ([`FrontEnd::answer`]), handing back a [`Reply`] that carries the
//!    [`Granted`] call;
//! 6. a streamed answer is made cuttable (withdrawal, an ended agreement); on conditional data its
//!    intent is made durable before any of it is sent and its completion before its end (an
//!    answer whole in hand is recorded as served at once; a table scan of a SQL statement adds
//!    its read to the statement, whose one intent names every read), and a source failure
//!    mid-stream is shown to the caller without its details;
//! 7. the call is counted by its status, its duration observed as its answer ends, and its place
//!    in the budget held until then.
//!
//! A front end supplies only its wire: how a request is checked, how an answer is encoded, and
//! (outside this module) how an error is rendered.

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use futures_util::TryStreamExt;
use hyper::header::{HeaderMap, USER_AGENT};
use policy::Caller;

use super::{lookup, observed, Call, Granted, Observer, Recorder};
use crate::answers::AnswerSlot;
use crate::audit;
use crate::error::{Error, Kind};
use crate::metrics::Timing;
use crate::source::Pieces;
use crate::state::{CatalogEntry, Live, State};

/// A protocol's side of a data call: its request, and its encoding of the answer.
pub trait FrontEnd: Send {
    /// A piece of an answer on the wire: bytes for HTTP, a message for Flight.
    type Piece: Send + 'static;
    /// What goes ahead of the pieces: the HTTP response head; nothing for Flight.
    type Head: Send;
    /// A refusal as the front end answers it: an HTTP error response, a gRPC status.
    type Refusal;
    /// The protocol, as the metrics name it (`http`, `flight`).
    const PROTOCOL: &'static str;

    /// Bytes a piece puts on the wire.
    fn size(piece: &Self::Piece) -> usize;

    /// Renders a refusal, with the body bytes it puts on the wire (counted as the call's).
    fn refuse(error: Error) -> (Self::Refusal, usize);

    /// The operation, as the audit log names it.
    fn operation(&self) -> &'static str;

    /// The SQL statement the call is a table scan of; none for other calls. On conditional
    /// data such a scan records no intent of its own: its read is added to the statement,
    /// which records one intent naming all its reads (a refusal is recorded as the scan's,
    /// naming the statement).
    fn statement(&self) -> Option<&audit::Statement> {
        None
    }

    /// Whether the answer streams whatever it holds (a download, a Flight stream), so that it
    /// is admitted with a streamed answer's room at once rather than grown to it.
    fn streams(&self) -> bool {
        false
    }

    /// The request's headers (or gRPC metadata): its key and its User-Agent.
    fn headers(&self) -> &HeaderMap;

    /// What the front end checks of its request before the call is admitted (HTTP: the method
    /// and the parameters; Flight: the ticket). A refusal here on conditional data is recorded.
    fn check(&mut self) -> Result<(), Error>;

    /// Answers the admitted call: grants it through [`Call::grant`] or [`super::start`], and
    /// encodes what it reads.
    fn answer<'c>(
        &'c mut self,
        call: &'c Call<'c>,
    ) -> impl Future<Output = Result<Reply<Self::Head, Self::Piece>, Error>> + Send + 'c;
}

/// A front end's answer to a granted call, not yet sent.
pub struct Reply<H, T> {
    pub head: H,
    pub body: Body<T>,
    /// The dataset version answered, for the audit record.
    pub version: Option<String>,
    /// The status the call is counted and recorded with (200, 206, 304; 200 on Flight).
    pub status: u16,
    pub granted: Granted,
}

/// An answer's body.
pub enum Body<T> {
    /// In hand whole (checked against the quotas and for cuts already): recorded as served
    /// before it is sent, with no stream to cut.
    Whole(T),
    /// Read as it is sent.
    Streamed(Pieces<T>),
}

/// A served call's head and pieces, ready for the wire.
pub type Answer<H, T> = (H, Pieces<T>);

/// Serves the call on dataset `id` that `front` received from `client` as request
/// `request_id`, in the order the module describes; a refusal is recorded (on conditional data)
/// and counted, and rendered by the front end.
pub async fn serve<F: FrontEnd>(
    state: &State,
    id: &str,
    client: IpAddr,
    request_id: &str,
    mut front: F,
) -> Result<Answer<F::Head, F::Piece>, F::Refusal> {
    let started = Instant::now();
    let live = state.live();
    // An unknown id is not a label of the metrics.
    let entry = lookup(&live, id).map_err(|e| F::refuse(e).0)?;
    let timing = Timing::default();
    let user_agent = front.headers().get(USER_AGENT).and_then(|v| v.to_str().ok());
    let recorder = policy::recorded(&entry.dataset)
        .then(|| Recorder::new(state, request_id, entry, front.operation(), F::PROTOCOL, client, user_agent))
        .map(|recorder| recorder.of_statement(front.statement()));
    let place = Place { state, live: &live, entry, client, timing: timing.clone() };
    let (answered, slot) = answer(&place, &mut front, recorder.as_ref()).await;
    let status = match &answered {
        Ok(answer) => answer.status,
        Err(e) => e.kind.status(),
    };
    let (bytes, rows) = state.metrics.data_call(F::PROTOCOL, &entry.dataset, status);
    // An error is observed here; an answer as it ends.
    let observer = Observer::new(&state.metrics, F::PROTOCOL, entry.dataset.open_type.as_str(), started, timing);
    let Sending { head, body, rows: answered_rows, .. } = match answered {
        Ok(answer) => answer,
        Err(e) => {
            e.log();
            let (refusal, size) = F::refuse(e);
            bytes.inc_by(size as u64);
            return Err(refusal);
        }
    };
    let body = observed(body, observer.rows(answered_rows, rows));
    let body = match slot {
        Some(slot) => slot.answer(body),
        None => body,
    };
    let body = body.inspect_ok(move |piece| bytes.inc_by(F::size(piece) as u64));
    Ok((head, Box::pin(body)))
}

/// A granted answer as it goes to the wire: its head, its pieces, the status it is counted
/// with, and the count of the rows it answers.
struct Sending<H, T> {
    head: H,
    body: Pieces<T>,
    status: u16,
    rows: Arc<AtomicU64>,
}

/// Where a call runs.
struct Place<'a> {
    state: &'a State,
    live: &'a Live,
    entry: &'a CatalogEntry,
    client: IpAddr,
    timing: Timing,
}

/// Steps 3 to 6: the answer with its status, or the error (recorded on conditional data), and
/// the call's place in the answer memory budget once it has one.
async fn answer<F: FrontEnd>(
    place: &Place<'_>,
    front: &mut F,
    recorder: Option<&Recorder<'_>>,
) -> (Result<Sending<F::Head, F::Piece>, Error>, Option<AnswerSlot>) {
    let state = place.state;
    let admitted = match front.check() {
        Ok(()) => state.answers.admit(place.client, F::PROTOCOL, front.streams()).await,
        Err(e) => Err(e),
    };
    let mut slot = match admitted {
        Ok(slot) => slot,
        Err(e) => return (Err(unserved(recorder, None, e).await), None),
    };
    let caller = match state.keys.caller(front.headers()).await {
        Ok(caller) => caller,
        Err(e) => return (Err(unserved(recorder, None, e).await), Some(slot)),
    };
    let call = Call::new(state, place.live, place.entry, &caller, place.client, F::PROTOCOL, place.timing.clone());
    let reply = match front.answer(&call).await {
        Ok(reply) => reply,
        Err(e) => return (Err(unserved(recorder, Some(&caller), e).await), Some(slot)),
    };
    // An answer that streams takes the room it may fill before its first byte; one encoded
    // whole is in memory already, within the base every answer was admitted with.
    if matches!(reply.body, Body::Streamed(_)) {
        if let Err(e) = slot.streamed().await {
            return (Err(unserved(recorder, Some(&caller), e).await), Some(slot));
        }
    }
    let rows = reply.granted.rows.clone();
    let sent = sent::<F>(&call, reply, recorder, front.statement()).await;
    (sent.map(|(head, body, status)| Sending { head, body, status, rows }), Some(slot))
}

/// Step 6: a granted reply as it may be sent, its records durable as far as they must be first.
/// Nothing has been sent yet: the reply (and the source behind it) is dropped if its records
/// cannot be made durable.
async fn sent<F: FrontEnd>(
    call: &Call<'_>,
    reply: Reply<F::Head, F::Piece>,
    recorder: Option<&Recorder<'_>>,
    statement: Option<&audit::Statement>,
) -> Result<(F::Head, Pieces<F::Piece>, u16), Error> {
    let Reply { head, body, version, status, granted } = reply;
    if let (Some(statement), Some(recorder)) = (statement, recorder) {
        let body = match body {
            Body::Whole(piece) => Box::pin(futures_util::stream::iter([Ok(piece)])),
            Body::Streamed(body) => body,
        };
        let body = call.cuttable(body, &granted);
        let (read, rows) = call.read(granted, version);
        statement.add(read, rows)?;
        return Ok((head, without_source_details(body, recorder.dataset.clone()), status));
    }
    let body = match (body, recorder) {
        (Body::Whole(piece), recorder) => {
            if let Some(recorder) = recorder {
                call.served_whole(recorder, granted, version, F::size(&piece) as u64, status).await?;
            }
            Box::pin(futures_util::stream::iter([Ok(piece)]))
        }
        (Body::Streamed(body), None) => call.cuttable(body, &granted),
        (Body::Streamed(body), Some(recorder)) => {
            let body = call.cuttable(body, &granted);
            let guard = call.intent(recorder, granted, version).await?;
            without_source_details(audit::audited(body, guard, status, F::size), recorder.dataset.clone())
        }
    };
    Ok((head, body, status))
}

/// Records a call on conditional data that ended in `error` before any data was served; other
/// calls' errors pass as they are.
async fn unserved(recorder: Option<&Recorder<'_>>, caller: Option<&Caller>, error: Error) -> Error {
    match recorder {
        Some(recorder) => {
            let status = error.kind.status();
            recorder.unserved(caller, error, status).await
        }
        None => error,
    }
}

/// A recorded answer whose source fails midway: the error may quote the data it choked on, which
/// may be outside the caller's scope or under a mask, so the caller gets no details (the log
/// keeps them).
fn without_source_details<T: Send + 'static>(body: Pieces<T>, dataset: String) -> Pieces<T> {
    Box::pin(body.map_err(move |e| {
        if e.kind == Kind::SourceFailed {
            tracing::warn!(dataset = %dataset, error = %e, "conditional source failed mid-stream");
            return Error::source("the dataset's source could not be read; the platform's operators have the details");
        }
        e
    }))
}
