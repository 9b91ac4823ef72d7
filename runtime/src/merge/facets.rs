//! Facet counts: how many items match a filter across the sources, in all and by source,
//! repository and category, over every page rather than one.
//!
//! A source whose plugin declares `facets@1` counts its own matches (the named call, answered from
//! its index); for an older one the host lists every match by name and counts them itself, up to
//! [`super::MAX_ORDERED_BY_HOST`] matches. A source that fails, or has more matches than that, is
//! left out of the counts and named in [`Counted::missing`], so the counts are then lower bounds.

use std::{collections::BTreeMap, sync::Arc};

use tokio::task::JoinSet;
use tributary_plugin_api::{
    capabilities, query::CompiledFilter, ErrorKind, Facets, FacetsRequest, Filter, ListRequest,
};

use super::{lane, source_filter, Failure, FailureKind};
use crate::call::{self, Budget, Fault, SourceHandle as Source};

/// The counts over several sources.
#[derive(Debug, Default)]
pub struct Counted {
    /// Summed over the sources that were counted.
    pub facets: Facets,
    /// Matches per source counted.
    pub sources: BTreeMap<String, u64>,
    /// Sources left out of the counts, with the reason, in source order.
    pub missing: Vec<Failure>,
}

/// Counts the matches of `filter` (its query parsed as `compiled`) in every source, concurrently.
pub async fn count(
    sources: &[Arc<Source>],
    filter: &Filter,
    compiled: &CompiledFilter,
    budget: Budget,
) -> Counted {
    let mut tasks = JoinSet::new();
    let mut spawned = Vec::with_capacity(sources.len());
    for source in sources {
        let sent = source_filter(source, filter, compiled.query());
        let (task_source, compiled) = (source.clone(), compiled.clone());
        let handle = tasks.spawn(async move {
            let counted = count_one(&task_source, sent, &compiled, budget).await;
            (task_source, counted)
        });
        spawned.push((handle.id(), source.clone()));
    }
    let mut counted = Counted::default();
    while let Some(joined) = tasks.join_next_with_id().await {
        let (source, result) = match joined {
            Ok((_, done)) => done,
            Err(e) => {
                let Some((_, source)) = spawned.iter().find(|(id, _)| *id == e.id()) else {
                    continue;
                };
                let failure = Failure {
                    source: source.name.clone(),
                    plugin: source.plugin.clone(),
                    kind: FailureKind::Plugin(ErrorKind::Internal),
                    message: format!("counting its matches did not finish: {e}"),
                };
                (source.clone(), Err(failure))
            }
        };
        match result {
            Ok(facets) => {
                counted
                    .sources
                    .insert(source.name.to_string(), facets.total);
                counted.facets.merge(&facets);
            }
            Err(failure) => counted.missing.push(failure),
        }
    }
    counted.missing.sort_by(|a, b| a.source.cmp(&b.source));
    counted
}

async fn count_one(
    source: &Arc<Source>,
    sent: Filter,
    compiled: &CompiledFilter,
    budget: Budget,
) -> Result<Facets, Failure> {
    if source.declares(capabilities::FACETS, 1) {
        let payload = FacetsRequest::from_filter(&sent).to_json();
        let answer = call::named(source, capabilities::FACETS, 1, payload, budget)
            .await
            .map_err(|fault| Failure::new(source, fault))?;
        return Facets::from_json(&answer).map_err(|e| Failure::new(source, Fault::contract(e)));
    }
    let request = ListRequest {
        filter: sent,
        ..ListRequest::default()
    };
    let (matches, _) =
        lane::all_matches(source, request, budget, compiled, "facets@1", "counts").await?;
    let mut facets = Facets::default();
    for item in &matches {
        facets.add(item);
    }
    Ok(facets)
}
