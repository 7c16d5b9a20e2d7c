//! `statestore rewind` and `statestore branch`: back to the end of a turn,
//! in place or as a new session. Turns are numbered from 1 as they are
//! stored (found from the stamps on their replies, `stored_turns`); turn 0
//! is the empty start.

use serde_json::json;
use statestore::pipeline::stored_turns;
use statestore::{Expect, SessionId, Store};

use crate::args::{BranchArgs, RewindArgs};
use crate::error::CliError;
use crate::store::open;
use crate::ui::Ui;

/// The position after turn `n` of session `id`, and the version read.
async fn after_turn(store: &dyn Store, id: &SessionId, n: usize) -> Result<(u64, u64), CliError> {
    let state = store
        .load(id)
        .await
        .map_err(CliError::read(format!("reading session {id}")))?
        .ok_or_else(|| CliError::Failed {
            message: format!("session {id:?} does not exist"),
            hint: Some("`statestore list` shows the sessions there are".into()),
        })?;
    if n == 0 {
        return Ok((0, state.version));
    }
    let turns = stored_turns(&state.messages, 0);
    match turns.get(n - 1) {
        Some(turn) => Ok((turn.end, state.version)),
        None => Err(CliError::Failed {
            message: format!("session {id:?} has {} stored turns, not {n}", turns.len()),
            hint: Some(format!("`statestore show {id}` shows its messages")),
        }),
    }
}

pub(crate) async fn rewind(ui: &Ui, url: &str, args: RewindArgs) -> Result<(), CliError> {
    let store = open(url).await?;
    let (to, version) = after_turn(&*store, &args.id, args.to_turn).await?;
    let id = &args.id;
    let now = store
        .rewind(id, to, Expect::Version(version))
        .await
        .map_err(CliError::write(format!("rewinding session {id}")))?;
    if ui.json {
        ui.out_json(&json!({ "session": id.as_str(), "messages": to, "version": now }))?;
    } else {
        ui.done(&format!(
            "rewound {id:?} to the end of turn {} ({to} messages kept, version {now})\n",
            args.to_turn
        ))?;
    }
    Ok(())
}

pub(crate) async fn branch(ui: &Ui, url: &str, args: BranchArgs) -> Result<(), CliError> {
    let store = open(url).await?;
    let (upto, _) = after_turn(&*store, &args.source, args.at_turn).await?;
    let (source, target) = (&args.source, &args.target);
    store
        .fork_at(source, target, upto)
        .await
        .map_err(CliError::write(format!("branching {source} into {target}")))?;
    if ui.json {
        ui.out_json(
            &json!({ "source": source.as_str(), "session": target.as_str(), "messages": upto }),
        )?;
    } else {
        ui.done(&format!(
            "branched {source:?} at turn {} into {target:?} ({upto} messages)\n",
            args.at_turn
        ))?;
    }
    Ok(())
}
