//! The source operations as the rest of the host uses them: each runs through [`call`] (the
//! source's own threads or its runner, under its health) and ends in the plugin's answer or a typed
//! [`Fault`]. [`list_in_place`] is the other way in: the merge's small `list` calls of fast sources,
//! made on the caller's thread.

use std::sync::Arc;

use abi_stable::std_types::{RResult, RStr, RVec};
use tributary_plugin_api::{contract, Detail, ListRequest, Summary};

use super::{call, in_place, Budget, Fault, SourceHandle};

/// `list`, guarded. `request` comes back with the items so that the caller's next call reuses it
/// without copying the filter. The caller checks the items against the contract (the merge also
/// re-applies the filter) and records the outcome.
pub async fn list(
    source: &Arc<SourceHandle>,
    request: ListRequest,
    budget: Budget,
) -> Result<(ListRequest, RVec<Summary>), Fault> {
    let result = call(source, "list", budget, move |src| {
        let result = src.imp.list(&request);
        (request, result)
    })
    .await;
    match result {
        Ok((request, RResult::ROk(items))) => Ok((request, items)),
        Ok((_, RResult::RErr(e))) => Err(Fault::from_plugin(e)),
        Err(e) => Err(e.into()),
    }
}

/// `list` made in place ([`in_place`]): on the caller's thread, when the request is small
/// ([`in_place::MAX_IN_PLACE_LIMIT`]), the source is fast and a slot is free. `None` when it must go
/// to the source's threads instead ([`list`]); nothing was called then. `rescue` fires if the call
/// gets stuck. As with [`list`], the caller checks the items and records the outcome.
pub fn list_in_place(
    source: &Arc<SourceHandle>,
    request: &ListRequest,
    budget: Budget,
    rescue: &Arc<in_place::Rescue>,
) -> Option<Result<RVec<Summary>, Fault>> {
    if request.limit > in_place::MAX_IN_PLACE_LIMIT {
        return None;
    }
    let (limit, _) = budget.for_call();
    let answer = in_place::try_call(
        source,
        "list",
        budget.source_timeout,
        std::time::Instant::now() + limit,
        rescue,
        |src| src.imp.list(request),
    )?;
    Some(match answer {
        RResult::ROk(items) => Ok(items),
        RResult::RErr(e) => Err(Fault::from_plugin(e)),
    })
}

/// `detail`, guarded and checked against the contract, its outcome recorded in the source's health
/// (a refusal or a timeout records nothing here: no answer came).
pub async fn detail(
    source: &Arc<SourceHandle>,
    identifier: String,
    budget: Budget,
) -> Result<Detail, Fault> {
    let identifier_for_check = identifier.clone();
    let result = call(source, "detail", budget, move |src| {
        src.imp.detail(RStr::from_str(&identifier))
    })
    .await;
    let answer = match result {
        Ok(RResult::ROk(detail)) => contract::check_detail(&identifier_for_check, &detail)
            .map(|()| detail)
            .map_err(|v| Fault::contract(v.into_message())),
        Ok(RResult::RErr(e)) => Err(Fault::from_plugin(e)),
        Err(e) => return Err(e.into()),
    };
    source.record(answer.as_ref().map(|_| ()));
    answer
}

/// A named call (`method@version`, e.g. `status@1`) with its JSON payload, guarded. The caller
/// decides from the plugin's declared capabilities whether to make it.
pub async fn named(
    source: &Arc<SourceHandle>,
    method: &'static str,
    version: u32,
    payload: String,
    budget: Budget,
) -> Result<String, Fault> {
    let result = call(source, method, budget, move |src| {
        src.imp
            .call(RStr::from_str(method), version, RStr::from_str(&payload))
    })
    .await;
    match result {
        Ok(RResult::ROk(text)) => Ok(text.into_string()),
        Ok(RResult::RErr(e)) => Err(Fault::from_plugin(e)),
        Err(e) => Err(e.into()),
    }
}
