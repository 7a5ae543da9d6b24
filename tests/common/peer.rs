//! A stand-in receiver's routine answers, for tests that play the far side of a push
//! or the client of `serve --send`: an empty DEST with room to spare.

use fsync_repl::protocol::{Reply, Request};

/// The answer of an empty, roomy receiver to a routine request (listing, space, the
/// source record, filesystem operations, commits); `None` for a data request (Begin,
/// Data, End, ...) that the test handles itself.
pub fn routine_answer(req: &Request) -> Option<Reply> {
    Some(match *req {
        Request::List { id, .. } => Reply::ListEnd {
            id,
            root: None,
            owners: false,
            problems: vec![],
        },
        Request::Space { id } => Reply::Space {
            id,
            space: Some((1 << 40, 1 << 41, 1 << 30, 1 << 31)),
        },
        Request::SourceRecord { id } => Reply::Record {
            id,
            result: Ok(None),
        },
        Request::Op { id, .. }
        | Request::Finish { id }
        | Request::Completed { id }
        | Request::SetSourceRecord { id, .. } => Reply::Done { id, result: Ok(()) },
        Request::Commit { id, .. } => Reply::Committed {
            id,
            result: Ok(vec![]),
        },
        _ => return None,
    })
}
